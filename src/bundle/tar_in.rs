//! A streaming reader of tar archives for imports, written for hostile input: headers are
//! parsed (ustar, GNU and PAX, long names and sizes) but nothing is ever unpacked; the caller
//! reads the data of the entries it wants, by name, and everything else is skipped.
//!
//! Invariants: memory is bounded whatever the archive says (a GNU long name or a PAX header
//! larger than [`MAX_EXTENDED_HEADER`] is refused, data is never buffered here); every header's
//! checksum is verified; an entry's data is exactly its size (an archive that ends early is
//! [`TarError::Truncated`], never a short file); the archive must end with its end-of-archive
//! blocks (an archive cut at an entry boundary is truncated too). Names are returned as the
//! archive spells them; making sense of them (and refusing `..`) is the caller's business.

use std::io::{self, Read};

/// Size of a tar block.
const BLOCK: u64 = 512;
/// Largest GNU long name/link or PAX extended header accepted.
pub const MAX_EXTENDED_HEADER: u64 = 1 << 20;

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("the archive ends early (truncated): {0}")]
    Truncated(String),
    #[error("not a tar archive, or a damaged one: {0}")]
    Malformed(String),
    #[error("reading the archive: {0}")]
    Io(#[source] io::Error),
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (also the old `\0` type and `7`, contiguous file).
    Regular,
    Directory,
    Symlink,
    /// A hard link to an earlier entry (its name in `link`).
    Hardlink,
    /// Anything else: devices, FIFOs, PAX global headers, vendor types (skipped).
    Other(u8),
}

/// One entry's header, with long names and PAX overrides applied.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Bytes of data that follow (for links and directories usually 0).
    pub size: u64,
    /// The target of a symlink or hardlink.
    pub link: Vec<u8>,
}

/// Reads a tar stream entry by entry.
pub struct TarReader<R> {
    inner: R,
    /// Data bytes of the current entry not yet read, and the padding after them.
    left: u64,
    padding: u64,
    /// Bytes consumed from `inner`.
    pub position: u64,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader { inner, left: 0, padding: 0, position: 0, done: false }
    }

    /// The next entry, after skipping what is left of the current one; `None` at the
    /// end-of-archive marker (two zero blocks).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.done {
            return Ok(None);
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Pax> = None;
        loop {
            // The rest of the previous entry (or extended header) and its padding.
            self.skip_rest()?;
            let mut header = [0u8; BLOCK as usize];
            if !self.read_block(&mut header)? {
                return Err(TarError::Truncated(String::from("no end-of-archive block")));
            }
            if header.iter().all(|&b| b == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(TarError::Malformed(String::from("an extended header describes no entry")));
                }
                // The end-of-archive marker is two zero blocks.
                if !self.read_block(&mut header)? {
                    return Err(TarError::Truncated(String::from("the end-of-archive marker is cut short")));
                }
                if header.iter().any(|&b| b != 0) {
                    return Err(TarError::Malformed(String::from("an entry after a zero block")));
                }
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&header)?;
            let typeflag = header[156];
            let mut size = parse_number(&header[124..136])
                .ok_or_else(|| TarError::Malformed(String::from("an entry's size field is not a number")))?;
            if let Some(s) = pax.as_ref().and_then(|p| p.size) {
                if !matches!(typeflag, b'x' | b'g' | b'L' | b'K') {
                    size = s;
                }
            }
            self.start(size)?;
            match typeflag {
                b'L' | b'K' | b'x' => {
                    if size > MAX_EXTENDED_HEADER {
                        return Err(TarError::Malformed(format!(
                            "an extended header of {size} bytes (at most {MAX_EXTENDED_HEADER})"
                        )));
                    }
                    let mut data = vec![0u8; size as usize];
                    self.read_data_exact(&mut data)?;
                    match typeflag {
                        b'L' => long_name = Some(trim_nul(&data).to_vec()),
                        b'K' => long_link = Some(trim_nul(&data).to_vec()),
                        _ => pax = Some(Pax::parse(&data)?),
                    }
                    continue;
                }
                _ => {}
            }
            let magic_ustar = &header[257..263] == b"ustar\0";
            let mut path = trim_nul(&header[..100]).to_vec();
            if magic_ustar {
                let prefix = trim_nul(&header[345..500]);
                if !prefix.is_empty() {
                    let mut p = prefix.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(&path);
                    path = p;
                }
            }
            let mut link = trim_nul(&header[157..257]).to_vec();
            if let Some(n) = long_name.take() {
                path = n;
            }
            if let Some(l) = long_link.take() {
                link = l;
            }
            if let Some(p) = pax.take() {
                if let Some(n) = p.path {
                    path = n;
                }
                if let Some(l) = p.linkpath {
                    link = l;
                }
            }
            let kind = match typeflag {
                b'0' | 0 | b'7' => EntryKind::Regular,
                b'5' => EntryKind::Directory,
                b'2' => EntryKind::Symlink,
                b'1' => EntryKind::Hardlink,
                other => EntryKind::Other(other),
            };
            // Old archives mark directories by a trailing slash on a regular entry.
            let kind = if kind == EntryKind::Regular && path.ends_with(b"/") { EntryKind::Directory } else { kind };
            return Ok(Some(Entry { path, kind, size, link }));
        }
    }

    /// Reads the current entry's data (0 at its end).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => return Err(TarError::Truncated(format!("{} bytes of an entry are missing", self.left))),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TarError::Io(e)),
            }
        };
        self.left -= n as u64;
        self.position += n as u64;
        Ok(n)
    }

    /// The current entry's data as a `Read` (errors become `io::Error`s carrying the
    /// [`TarError`]; see [`into_tar_error`]).
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { reader: self }
    }

    /// Reads whatever follows the end-of-archive block (so that the writer of a pipe is not
    /// cut off); returns how many bytes that was.
    pub fn drain(&mut self) -> Result<u64, TarError> {
        io::copy(&mut self.inner, &mut io::sink()).map_err(TarError::Io)
    }

    fn start(&mut self, size: u64) -> Result<(), TarError> {
        self.left = size;
        self.padding = (BLOCK - size % BLOCK) % BLOCK;
        Ok(())
    }

    fn read_data_exact(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        let mut off = 0;
        while off < buf.len() {
            let n = self.read_data(&mut buf[off..])?;
            if n == 0 {
                return Err(TarError::Truncated(String::from("an extended header is cut short")));
            }
            off += n;
        }
        Ok(())
    }

    fn skip_rest(&mut self) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while self.left > 0 {
            self.read_data(&mut buf)?;
        }
        let mut pad = [0u8; BLOCK as usize];
        let padding = self.padding as usize;
        self.padding = 0;
        if padding > 0 && !self.read_exact_or_eof(&mut pad[..padding])? {
            return Err(TarError::Truncated(String::from("an entry's padding is missing")));
        }
        Ok(())
    }

    /// Reads a whole block: `false` at a clean end of input before its first byte.
    fn read_block(&mut self, block: &mut [u8]) -> Result<bool, TarError> {
        self.read_exact_or_eof(block)
    }

    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<bool, TarError> {
        let mut off = 0;
        while off < buf.len() {
            match self.inner.read(&mut buf[off..]) {
                Ok(0) if off == 0 => return Ok(false),
                Ok(0) => return Err(TarError::Truncated(String::from("a header block is cut short"))),
                Ok(n) => {
                    off += n;
                    self.position += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TarError::Io(e)),
            }
        }
        Ok(true)
    }
}

/// The data of the current entry, as a `Read`.
pub struct EntryData<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf).map_err(io::Error::other)
    }
}

/// The [`TarError`] inside an `io::Error` made by [`EntryData`] (any other error is `Io`).
pub fn into_tar_error(e: io::Error) -> TarError {
    if e.get_ref().is_some_and(|inner| inner.is::<TarError>()) {
        match e.into_inner().map(|inner| inner.downcast::<TarError>()) {
            Some(Ok(t)) => *t,
            Some(Err(other)) => TarError::Io(io::Error::other(other)),
            None => TarError::Io(io::Error::other("unknown error")),
        }
    } else {
        TarError::Io(e)
    }
}

/// The fields of a PAX extended header this reader honours.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Pax {
    /// Parses records `LEN KEY=VALUE\n`.
    fn parse(mut data: &[u8]) -> Result<Pax, TarError> {
        let bad = |why: &str| TarError::Malformed(format!("PAX header: {why}"));
        let mut pax = Pax::default();
        while !data.is_empty() {
            if data.iter().all(|&b| b == 0) {
                break;
            }
            let space = data.iter().position(|&b| b == b' ').ok_or_else(|| bad("a record without a length"))?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("a record length that is not a number"))?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err(bad("a record length that does not fit"));
            }
            let record = &data[space + 1..len - 1];
            let eq = record.iter().position(|&b| b == b'=').ok_or_else(|| bad("a record without '='"))?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => {
                    let size = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("a size that is not a number"))?;
                    pax.size = Some(size);
                }
                _ => {}
            }
            data = &data[len..];
        }
        Ok(pax)
    }
}

fn trim_nul(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

/// An octal number field (spaces and NULs around it), or GNU's base-256 form.
fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base 256, big-endian, the top bit of the first byte a marker (negative: refused).
        if field[0] & 0x40 != 0 {
            return None;
        }
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn verify_checksum(header: &[u8; BLOCK as usize]) -> Result<(), TarError> {
    let stated = parse_number(&header[148..156])
        .ok_or_else(|| TarError::Malformed(String::from("a header checksum that is not a number")))?;
    let unsigned: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { u64::from(b' ') } else { u64::from(b) })
        .sum();
    let signed: i64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { i64::from(b' ') } else { i64::from(b as i8) })
        .sum();
    if stated == unsigned || i64::try_from(stated).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(TarError::Malformed(String::from("a header checksum does not match (not a tar archive?)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, EntryKind, Vec<u8>)>, TarError> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            r.data().read_to_end(&mut data).map_err(into_tar_error)?;
            out.push((String::from_utf8_lossy(&e.path).into_owned(), e.kind, data));
        }
        Ok(out)
    }

    #[test]
    fn entries_long_names_and_data_are_read_and_truncation_is_refused() {
        let long = format!("blobs/sha256/{}", "a".repeat(200));
        let bytes = archive(&[("oci-layout", b"{}"), (&long, b"hello world"), ("empty", b"")]);
        let entries = read_all(&bytes).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].0, long);
        assert_eq!(entries[1].2, b"hello world");
        assert_eq!(entries[2].1, EntryKind::Regular);
        // Cut anywhere: refused, never a short file.
        for cut in [10, 600, 1030, bytes.len() - 1024, bytes.len() - 1] {
            assert!(read_all(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut flipped = bytes.clone();
        flipped[3] ^= 1;
        assert!(matches!(read_all(&flipped), Err(TarError::Malformed(_))));
    }

    #[test]
    fn a_huge_extended_header_is_refused_without_reading_it() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 40);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'a'; 4096]);
        assert!(matches!(read_all(&bytes), Err(TarError::Malformed(_))));
    }

    #[test]
    fn pax_sizes_and_paths_override_the_header() {
        let mut b = tar::Builder::new(Vec::new());
        let name = "x/".repeat(80) + "file";
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_pax_extensions([("path", name.as_bytes())]).unwrap();
        h.set_path("short").unwrap();
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let entries = read_all(&bytes).unwrap();
        assert_eq!(entries, vec![(name, EntryKind::Regular, b"abc".to_vec())]);
        assert_eq!(parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
    }
}
