//! The `pier` binary: hands the command line to `pier::cli`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(pier::cli::main(args));
}
