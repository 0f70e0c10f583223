//! A private Docker engine (Debian's `docker.io`: dockerd 20.10, run as root without systemd)
//! for the engine tests, and the clients that talk to it: `docker` and `docker-compose`.
//!
//! [`Dockerd::start`] runs `dockerd --data-root D --exec-root E -H unix://S --pidfile P
//! --storage-driver=vfs` with every path in a temporary directory of its own, waits until the
//! engine answers, and dropping it stops the engine by PID (SIGTERM, then SIGKILL) and removes
//! the directory. Clients get `DOCKER_HOST` and a private `DOCKER_CONFIG` (`docker login`
//! credentials stay in the test).
//!
//! Invariant: at most one engine runs on the machine at a time. An engine is cheap to start
//! (about 1 s) but not private in everything: the default bridge `docker0`, the iptables chains
//! and the address pools of compose networks are the host's. So [`Dockerd::start`] first takes
//! an exclusive `flock` on [`ENGINE_LOCK`] (held until the engine is stopped): engine tests run
//! one after the other, in this process and across processes (two `cargo test` runs on one
//! machine). Tests publish ports on 127.0.0.1 only.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::command::{describe_failure, output, tail};
use super::wait::wait_until;

/// The engine and client of Debian's `docker.io` (by path: another `docker` may come first in
/// `PATH`), and Debian's `docker-compose` 1.29.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKER_COMPOSE: &str = "docker-compose";

/// The host-wide lock that serialises engines (see the module documentation).
pub const ENGINE_LOCK: &str = "/tmp/pier-tests-dockerd.lock";

/// How long the engine may take to answer after it was started.
const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop (it stops its containers first) before it gets SIGKILL.
const ENGINE_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running private engine; dropping it stops the engine and frees the lock.
pub struct Dockerd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log_path: PathBuf,
    /// How long the engine took from spawn to its first answer.
    pub startup: Duration,
    _lock: Flock<File>,
}

impl Dockerd {
    /// Takes the engine lock (waiting for another engine test to finish), starts the engine
    /// and waits until `docker version` answers.
    pub fn start() -> Dockerd {
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(ENGINE_LOCK)
            .unwrap_or_else(|e| panic!("cannot open {ENGINE_LOCK}: {e}"));
        let lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("cannot lock {ENGINE_LOCK}: {e}"));
        // A short path: the socket's must fit sun_path (108 bytes).
        let dir = tempfile::Builder::new().prefix("pier-dockerd.").tempdir_in("/tmp").expect("tempdir");
        let d = dir.path();
        let socket = d.join("docker.sock");
        let log_path = d.join("dockerd.log");
        let log = File::create(&log_path).expect("create dockerd log");
        let started = Instant::now();
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--storage-driver=vfs")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {DOCKERD}: {e} (Debian docker.io; .ci/run installs it)"));
        let mut engine = Dockerd { child, dir, socket, log_path, startup: Duration::ZERO, _lock: lock };
        let up = wait_until(ENGINE_START_TIMEOUT, || {
            if let Ok(Some(st)) = engine.child.try_wait() {
                panic!("dockerd exited ({st}) before answering:\n{}", engine.log_tail());
            }
            output(&mut engine.docker(&["version", "--format", "{{.Server.Version}}"])).status.success()
        });
        assert!(up, "dockerd did not answer within {ENGINE_START_TIMEOUT:?}:\n{}", engine.log_tail());
        engine.startup = started.elapsed();
        engine
    }

    /// `docker ARGS` against this engine (private `DOCKER_CONFIG`, the legacy builder).
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        self.client_env(&mut c);
        c.args(args);
        c
    }

    /// `docker-compose --project-directory DIR -p PROJECT ARGS` against this engine; the
    /// compose file is DIR/docker-compose.yml as users have it.
    pub fn compose(&self, dir: &Path, project: &str, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER_COMPOSE);
        self.client_env(&mut c);
        c.current_dir(dir).args(["--ansi", "never"]).arg("-p").arg(project).args(args);
        c
    }

    fn client_env(&self, c: &mut Command) {
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env("DOCKER_BUILDKIT", "0")
            .env("COMPOSE_DOCKER_CLI_BUILD", "0");
    }

    /// Runs `cmd`, which must succeed; panics with its output and the engine's log otherwise.
    #[track_caller]
    pub fn run(&self, cmd: &mut Command) -> String {
        let out = output(cmd);
        if !out.status.success() {
            panic!("{}\n--- dockerd log (tail) ---\n{}", describe_failure(cmd, &out), self.log_tail());
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker ARGS`, which must succeed; its stdout, trimmed.
    #[track_caller]
    pub fn d(&self, args: &[&str]) -> String {
        self.run(&mut self.docker(args)).trim().to_string()
    }

    /// `docker inspect --format FORMAT NAME`, trimmed.
    #[track_caller]
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.d(&["inspect", "--format", format, name])
    }

    /// `docker logs NAME`: what the container wrote to stdout and stderr (pier logs to stderr).
    #[track_caller]
    pub fn logs(&self, name: &str) -> String {
        let mut cmd = self.docker(&["logs", name]);
        let out = output(&mut cmd);
        assert!(out.status.success(), "{}", describe_failure(&cmd, &out));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// The end of the engine's log.
    pub fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log_path).unwrap_or_default()).to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + ENGINE_STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
