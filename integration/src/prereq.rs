//! Finding the programs the stack runs: `mariadbd`, `mariadb-install-db`, `java` and the Kafka jars.
//!
//! Each can be overridden by an environment variable; a missing one is a `StackError::Missing` that
//! names the piece and the command that installs it. Nothing here starts a process but `java -version`.

use std::path::{Path, PathBuf};

use crate::StackError;

/// What `scripts/setup` is called, named in every "missing" message.
pub const SETUP_HINT: &str = "run `scripts/setup` from the repository root (it installs mariadb-server, Java 17 and the Kafka jars)";

/// Where the programs of the stack live on this machine.
#[derive(Debug, Clone)]
pub struct Prerequisites {
    /// The MariaDB server binary.
    pub mariadbd: PathBuf,
    /// The tool that creates a fresh data directory.
    pub install_db: PathBuf,
    /// The Java launcher for Kafka (17 or later).
    pub java: PathBuf,
    /// The folder of Kafka broker jars resolved from Maven Central.
    pub kafka_libs: PathBuf,
}

impl Prerequisites {
    /// Finds every piece, or says which one is missing.
    pub fn find() -> Result<Self, StackError> {
        let (mariadbd, install_db) = Self::find_mariadb()?;
        Ok(Self {
            mariadbd,
            install_db,
            java: find_java()?,
            kafka_libs: find_kafka_libs()?,
        })
    }

    /// The MariaDB binaries only (a stack without Kafka needs no Java).
    pub fn find_mariadb() -> Result<(PathBuf, PathBuf), StackError> {
        let mariadbd = find_program("SQUEAL_MARIADBD", "mariadbd", &["/usr/sbin/mariadbd"])?;
        let install_db = find_program(
            "SQUEAL_MARIADB_INSTALL_DB",
            "mariadb-install-db",
            &["/usr/bin/mariadb-install-db"],
        )?;
        Ok((mariadbd, install_db))
    }
}

/// A program from `env_var`, else `PATH`, else the given fallbacks.
fn find_program(env_var: &str, name: &str, fallbacks: &[&str]) -> Result<PathBuf, StackError> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(StackError::Missing {
                piece: format!("{name} (from ${env_var}={})", path.display()),
                hint: format!(
                    "point ${env_var} at an executable {name}, or unset it; or {SETUP_HINT}"
                ),
            })
        };
    }
    let from_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| is_executable(p))
        .ok_or_else(|| StackError::Missing {
            piece: name.to_string(),
            hint: SETUP_HINT.to_string(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `java` 17 or later.
fn find_java() -> Result<PathBuf, StackError> {
    let java = match std::env::var_os("JAVA_HOME") {
        Some(home) if is_executable(&Path::new(&home).join("bin/java")) => {
            Path::new(&home).join("bin/java")
        }
        _ => find_program("SQUEAL_JAVA", "java", &["/usr/bin/java"])?,
    };
    let output = std::process::Command::new(&java)
        .arg("-version")
        .output()
        .map_err(|source| StackError::Io {
            what: format!("run {} -version", java.display()),
            source,
        })?;
    // `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` on stderr.
    let text = String::from_utf8_lossy(&output.stderr);
    let major = text
        .split('"')
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 17 => Ok(java),
        _ => Err(StackError::Missing {
            piece: format!(
                "Java 17 or later (found: {})",
                text.lines().next().unwrap_or("nothing")
            ),
            hint: SETUP_HINT.to_string(),
        }),
    }
}

/// The repository's `.deps/kafka/libs`, or `$SQUEAL_KAFKA_LIBS`.
fn find_kafka_libs() -> Result<PathBuf, StackError> {
    let dir = match std::env::var_os("SQUEAL_KAFKA_LIBS") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join(".deps/kafka/libs"),
    };
    let has_broker = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
        })
        .unwrap_or(false);
    if has_broker {
        Ok(dir)
    } else {
        Err(StackError::Missing {
            piece: format!("Kafka broker jars (kafka_2.13-*.jar in {})", dir.display()),
            hint: SETUP_HINT.to_string(),
        })
    }
}

/// The repository root: where this crate was built from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}
