//! `cargo xtask test`: the README's test command. It makes sure what the interop tests
//! drive is present, installing it when it can, and then runs `cargo test --workspace`:
//!
//! - Debian's `tor` (and its `tor-gencert`), installed with apt when run as root. The
//!   package's own service is kept from starting while it installs, so no system tor ever
//!   reaches out to the public network from a test machine.
//! - `stem` and `cryptography` in a project-local Python environment (`.venv/` at the
//!   workspace root), created with `python3 -m venv` (apt brings `python3-venv` when run
//!   as root and it is missing). The tests find it through `TESTS_PYTHON`, or at that
//!   path when run with plain `cargo test`.
//!
//! Invariant: when something cannot be installed it says exactly what to install and
//! exits non-zero before any test runs; it never lets interop tests skip.
//!
//! `cargo xtask test -- ARGS` passes ARGS on to `cargo test --workspace`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The stem release the dirauth test's expectations were written against.
const STEM: &str = "stem==1.8.2";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match args.next().as_deref().and_then(|a| a.to_str()) {
        Some("one-build") => match one_build() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::FAILURE
            }
        },
        Some("test") => {
            let rest: Vec<OsString> = args.skip_while(|a| a == "--").collect();
            match test(&rest) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("xtask: {e}");
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask test [-- ARGS] | cargo xtask one-build\n\n  \
                 test       install what the interop tests need (Debian's tor, stem in .venv/) \
                 and run `cargo test --workspace ARGS`\n  \
                 one-build  after `test`: check that building the launcher and our binaries \
                 compiles nothing again (one feature set per crate)"
            );
            ExitCode::from(2)
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// `cargo`, without the environment `cargo run` gave this process (see
/// [`xtask::without_run_env`]).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    xtask::without_run_env(&mut cmd);
    cmd.current_dir(workspace());
    cmd
}

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

fn test(cargo_args: &[OsString]) -> Result<ExitCode, String> {
    ensure_tor()?;
    let python = ensure_stem()?;
    say("running cargo test --workspace");
    let status = cargo()
        .args(["test", "--workspace"])
        .args(cargo_args)
        .env("TESTS_PYTHON", &python)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// After `cargo xtask test`: the builds the launcher and benchmarks make (`cargo run -p
/// testnet`, then its `cargo build --workspace --bins` for our binaries) must find every crate already
/// compiled. A crate built again means two feature sets (see `workspace-hack/`).
fn one_build() -> Result<(), String> {
    let builds: [&[&str]; 2] = [
        &["build", "-p", "testnet", "--bins"],
        &["build", "--workspace", "--bins"],
    ];
    let mut rebuilt = Vec::new();
    for args in builds {
        let out = cargo()
            .args(args)
            .arg("--message-format=json")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo {} failed", args.join(" ")));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut artifacts = 0;
        for line in text
            .lines()
            .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        {
            artifacts += 1;
            if line.contains("\"fresh\":false") {
                let id = line
                    .split("\"package_id\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?");
                rebuilt.push(format!("{id} (cargo {})", args.join(" ")));
            }
        }
        say(&format!("cargo {}: {artifacts} artifacts", args.join(" ")));
    }
    if rebuilt.is_empty() {
        say("one build: nothing was compiled again");
        Ok(())
    } else {
        Err(format!(
            "compiled again with other features:\n  {}\nregenerate workspace-hack/ \
             (`cargo hakari generate`, see its Cargo.toml)",
            rebuilt.join("\n  ")
        ))
    }
}

/// True when `cmd args` runs and exits 0 (its output discarded).
fn runs(cmd: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Root with apt: the one case where this installs Debian packages itself.
fn can_apt() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    root && on_path("apt-get")
}

/// `apt-get install` of `packages`, with every service start refused while it runs
/// (Debian's `policy-rc.d` convention), so the tor package's own daemon never starts.
fn apt_install(packages: &[&str]) -> Result<(), String> {
    say(&format!("installing {} with apt-get", packages.join(" ")));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# written by cargo xtask test while apt-get runs\nexit 101\n",
        )
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))
        })
        .map_err(|e| format!("cannot write {}: {e}", policy.display()))?;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = apt(&["update", "-qq"])
        && apt(&[
            &["install", "-y", "-qq", "--no-install-recommends"][..],
            packages,
        ]
        .concat());
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    if ok {
        Ok(())
    } else {
        Err(format!("apt-get install {} failed", packages.join(" ")))
    }
}

fn ensure_tor() -> Result<(), String> {
    let have = || runs("tor", &["--version"]) && on_path("tor-gencert");
    if !have() {
        if !can_apt() {
            return Err(
                "the interop tests drive Debian's C tor, which is not installed: \
                 run `sudo apt-get install -y tor` (it brings tor and tor-gencert), then this again"
                    .into(),
            );
        }
        apt_install(&["tor"])?;
        // Had a service manager started it anyway, stop it: tests start their own.
        let _ = runs("systemctl", &["disable", "--now", "tor"]);
        if !have() {
            return Err(
                "apt-get installed tor, but `tor --version` or tor-gencert still fails".into(),
            );
        }
    }
    let v = Command::new("tor")
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    let v = String::from_utf8_lossy(&v.stdout);
    say(&format!("tor: {}", v.lines().next().unwrap_or("?")));
    Ok(())
}

/// The project-local Python with stem, created or completed as needed; returns its path.
fn ensure_stem() -> Result<PathBuf, String> {
    let venv = workspace().join(".venv");
    let python = venv.join("bin").join("python3");
    let check = ["-c", "import stem, cryptography; print(stem.__version__)"];
    if runs(&python, &check) {
        say(&format!("stem in {}", venv.display()));
        return Ok(python);
    }
    if !runs(&python, &["-c", "pass"]) {
        let make = || {
            runs(
                "python3",
                &["-m", "venv", "--clear", &venv.to_string_lossy()],
            )
        };
        if !make() {
            if !can_apt() {
                return Err(format!(
                    "the dirauth test checks our documents with Python's stem, and `python3 -m venv {}` \
                     failed: install Python 3 with venv (`sudo apt-get install -y python3-venv`), then \
                     this again",
                    venv.display()
                ));
            }
            apt_install(&["python3-venv"])?;
            if !make() {
                return Err(format!(
                    "`python3 -m venv {}` fails even with python3-venv",
                    venv.display()
                ));
            }
        }
    }
    say(&format!(
        "installing {STEM} and cryptography into {}",
        venv.display()
    ));
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            STEM,
            "cryptography",
        ])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !pip || !runs(&python, &check) {
        return Err(format!(
            "could not install {STEM} and cryptography into {} (PyPI unreachable?): install them there \
             (`{} -m pip install {STEM} cryptography`), then this again",
            venv.display(),
            python.display()
        ));
    }
    Ok(python)
}
