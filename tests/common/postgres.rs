//! A real PostgreSQL server for the tests: Debian's `postgresql` package (installed by
//! `scripts/install-postgres`), a fresh cluster in a temporary directory, on a
//! loopback port, with a password for TCP logins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};


/// The password of the `weir` superuser; the tests hand it to jobs through the
/// environment, never the job file.
pub const PASSWORD: &str = "s3cret-for-tests";

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_POSTGRES_BIN") {
        return dir.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL is not installed: run `bash scripts/install-postgres` (scripts/test does)")
}

/// A running server, stopped when dropped.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
    /// Server settings on the command line (`-c name=value ...`).
    pub settings: String,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), PASSWORD).unwrap();
        // The server refuses to run as root: as root, the cluster belongs to the
        // package's `postgres` user.
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(as_server_user(bin_dir().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "weir", "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", dir.path().join("password").display())));
        let settings = "-c max_prepared_transactions=16".into();
        let mut server = Postgres { port: free_port(), dir, running: false, settings };
        server.start_again();
        server.sql("postgres", "CREATE DATABASE shop");
        server
    }

    /// Starts the server (after [`Postgres::stop`]) on the same port and data.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        run(as_server_user(bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "start"]));
        self.running = true;
    }

    /// Stops the server at once (`immediate`: as a crash; open transactions are lost,
    /// prepared ones survive).
    pub fn stop(&mut self) {
        run(as_server_user(bin_dir().join("pg_ctl")).arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]));
        self.running = false;
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A job file's `connection` for database `shop` (no password).
    pub fn connection(&self) -> String {
        format!("host=127.0.0.1 port={} user=weir dbname=shop connect_timeout=5", self.port)
    }

    pub fn client(&self) -> postgres::Client {
        let mut config: postgres::Config = self.connection().parse().unwrap();
        config.password(PASSWORD);
        config.connect(postgres::NoTls).unwrap()
    }

    /// Runs SQL in `database` through a local socket (trusted, no password).
    pub fn sql(&self, database: &str, sql: &str) {
        let output = Command::new(bin_dir().join("psql"))
            .args(["-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "weir", "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "psql: {sql}: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Every row of `query` in database `shop`, each as its columns' text joined by `|`.
    pub fn rows(&self, query: &str) -> Vec<String> {
        let mut client = self.client();
        let rows = client.simple_query(query).unwrap();
        rows.iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).unwrap_or("NULL")).collect::<Vec<_>>().join("|"))
                }
                _ => None,
            })
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = as_server_user(bin_dir().join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "stop"])
                .output();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn as_server_user(program: PathBuf) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
