//! The host, reached with the system `ssh`: batch mode (never a prompt), host keys accepted on
//! first use into the CLI's own `known_hosts` and checked on every later connection, one master
//! connection per host reused by every command of the run. Commands run as root: directly, or
//! through `sudo -n` (a sudo that wants a password is a clear error, not a prompt). Secrets go
//! over standard input into files of mode 0600, never onto a command line that `ps` shows.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::AsyncWriteExt as _;

/// `user@host[:port]` (an IPv6 host in brackets: `root@[2001:db8::7]:2222`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let bad = || {
            format!("{s:?} is not user@host[:port] (e.g. ubuntu@203.0.113.7 or root@edge-1:2222)")
        };
        let (user, rest) = s.split_once('@').ok_or_else(bad)?;
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, 22),
                port => (
                    host,
                    port.strip_prefix(':')
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(bad)?,
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
                None => (rest, 22),
            }
        };
        let fine = |part: &str| {
            !part.is_empty()
                && !part.starts_with('-')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
        };
        if !fine(user) || !fine(host) || port == 0 {
            return Err(bad());
        }
        Ok(Target {
            user: user.into(),
            host: host.into(),
            port,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

/// What a remote command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// ssh's own exit status when it could not connect or authenticate.
const SSH_FAILED: i32 = 255;

/// One host's SSH connection.
#[derive(Debug, Clone)]
pub struct Ssh {
    target: Target,
    key: Option<PathBuf>,
    known_hosts: PathBuf,
    control: PathBuf,
    /// `sudo -n` before every root command (the user is not root).
    sudo: bool,
}

impl Ssh {
    /// A connection to `target`, with `key` (else ssh's defaults), host keys in `known_hosts`,
    /// the master connection's socket in `control_dir`.
    pub fn new(
        target: Target,
        key: Option<PathBuf>,
        known_hosts: &Path,
        control_dir: &Path,
    ) -> Ssh {
        let sudo = target.user != "root";
        // Short: a unix socket path has ~100 bytes.
        let name = format!("{:016x}", fnv(&target.to_string()));
        Ssh {
            control: control_dir.join(name),
            known_hosts: known_hosts.to_path_buf(),
            key,
            target,
            sudo,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-p")
            .arg(self.target.port.to_string())
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "ConnectTimeout=10"])
            .args(["-o", "ServerAliveInterval=15"])
            .args(["-o", "ControlMaster=auto"])
            .arg("-o")
            .arg(format!("ControlPath={}", self.control.display()))
            .args(["-o", "ControlPersist=60"])
            .args(["-o", "LogLevel=ERROR"]);
        if let Some(key) = &self.key {
            cmd.arg("-i").arg(key).args(["-o", "IdentitiesOnly=yes"]);
        }
        cmd.arg(format!("{}@{}", self.target.user, self.target.host))
            .kill_on_drop(true)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `script` with `sh -c` on the host (as root when `root`), `args` as its `$1...`,
    /// `input` on its standard input. `Err` only when ssh itself (or sudo) failed.
    async fn exec(
        &self,
        root: bool,
        script: &str,
        args: &[&str],
        raw: &str,
        input: &[u8],
    ) -> anyhow::Result<Output> {
        let mut cmd = self.command();
        // The remote command line: the script (no secret in it) and its quoted arguments
        // (paths, sizes); `input` (a secret, perhaps) comes over standard input.
        let mut remote = String::new();
        if root && self.sudo {
            remote.push_str("sudo -n ");
        }
        remote.push_str("sh -c ");
        remote.push_str(&quote(script));
        remote.push_str(" sh");
        for arg in args {
            remote.push(' ');
            remote.push_str(&quote(arg));
        }
        remote.push_str(raw);
        cmd.arg(remote);
        let mut child = cmd
            .spawn()
            .context("running ssh (is OpenSSH's client installed?)")?;
        let mut stdin = child.stdin.take().context("ssh's stdin")?;
        let input = input.to_vec();
        let feed = async move {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let (_, out) = tokio::join!(
            feed,
            tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        );
        let out = out.context("the remote command took more than 10 minutes")??;
        let output = Output {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if output.status == Some(SSH_FAILED) || output.status.is_none() {
            bail!("{}", ssh_failure(&self.target, &output.stderr));
        }
        if root && self.sudo && output.stderr.contains("a password is required") {
            bail!(
                "sudo on {} asks for a password; give {} passwordless sudo \
                 (a line `{} ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d/) or connect as root",
                self.target.host,
                self.target.user,
                self.target.user
            );
        }
        Ok(output)
    }

    /// Runs `script` as root.
    pub async fn root(&self, script: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.exec(true, script, args, "", &[]).await
    }

    /// Runs the preflight `script` as root with `dir` as `$1` and, as `$2`, the SSH connection
    /// as the login shell sees it (`client port server port`: sudo would drop the variable).
    pub async fn probe(&self, script: &str, dir: &str) -> anyhow::Result<Output> {
        self.exec(true, script, &[dir], " \"$SSH_CONNECTION\"", &[])
            .await
    }

    /// Writes `contents` to `path` as root with `mode`, atomically (a temporary file renamed),
    /// creating its directory; the contents travel over standard input. Whether the file
    /// changed (false: it held these bytes already, and was left alone).
    pub async fn put(&self, path: &str, contents: &[u8], mode: u32) -> anyhow::Result<bool> {
        let out = self
            .exec(
                true,
                PUT,
                &[path, &format!("{mode:o}"), &contents.len().to_string()],
                "",
                contents,
            )
            .await?;
        match out.stdout.trim() {
            "same" => Ok(false),
            "written" => Ok(true),
            _ => bail!(
                "could not write {path} on {}: {}",
                self.target.host,
                out.stderr.trim()
            ),
        }
    }

    /// Closes the master connection.
    pub async fn close(&self) {
        let mut cmd = self.command();
        cmd.args(["-O", "exit"]);
        let _ = cmd.output().await;
    }
}

/// `$1` path, `$2` octal mode, `$3` length; the contents follow on standard input. Created with
/// `umask 077` so a secret is never readable, even for a moment.
const PUT: &str = r#"
set -e
umask 077
path="$1"; mode="$2"; len="$3"
mkdir -p "$(dirname "$path")"
tmp="$path.frameworks-tmp"
head -c "$len" > "$tmp"
if [ -f "$path" ] && cmp -s "$tmp" "$path" && [ "$(stat -c %a "$path")" = "$mode" ]; then
  rm -f "$tmp"; echo same
else
  chmod "$mode" "$tmp"; chown 0:0 "$tmp"; mv -f "$tmp" "$path"; echo written
fi
"#;

/// What went wrong connecting, in words that say what to do.
fn ssh_failure(target: &Target, stderr: &str) -> String {
    let said = stderr.trim();
    let hint = if said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || said.contains("Host key verification failed")
    {
        "the host's key is not the one seen before; if the server was reinstalled, remove its line \
         from the CLI's known_hosts and run again"
    } else if said.contains("Permission denied") {
        "the server refused the key; pass the right one with --ssh-key, or add your public key to \
         the user's ~/.ssh/authorized_keys"
    } else if said.contains("Connection refused")
        || said.contains("timed out")
        || said.contains("No route")
    {
        "nothing answers SSH there; check the address, the port and the firewall"
    } else if said.contains("Could not resolve") {
        "the host name does not resolve; use its IP address or fix DNS"
    } else {
        "check that `ssh` to it works from here"
    };
    format!("SSH to {target} failed: {said} ({hint})")
}

/// Quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A short stable hash (the control socket's name).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_port() {
        let t: Target = "ubuntu@203.0.113.7".parse().expect("target");
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("ubuntu", "203.0.113.7", 22)
        );
        let t: Target = "root@edge-1.example.net:2222".parse().expect("target");
        assert_eq!((t.host.as_str(), t.port), ("edge-1.example.net", 2222));
        let t: Target = "root@[2001:db8::7]:2200".parse().expect("target");
        assert_eq!((t.host.as_str(), t.port), ("2001:db8::7", 2200));
        assert_eq!(t.to_string(), "root@[2001:db8::7]:2200");
        for bad in [
            "host-only",
            "@host",
            "user@",
            "user@host:",
            "user@host:0",
            "user@host:99999",
            "-oProxyCommand=x@host",
            "user@-oProxyCommand=x",
            "user@host;rm",
            "user@[::1",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("/opt/it's here"), r"'/opt/it'\''s here'");
    }

    #[test]
    fn failures_say_what_to_do() {
        let t: Target = "ubuntu@edge".parse().expect("target");
        let said = ssh_failure(&t, "ubuntu@edge: Permission denied (publickey).");
        assert!(said.contains("--ssh-key"), "{said}");
        let said = ssh_failure(&t, "ssh: connect to host edge port 22: Connection refused");
        assert!(said.contains("firewall"), "{said}");
    }
}
