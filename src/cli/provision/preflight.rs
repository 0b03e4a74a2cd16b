//! Step 1, preflight: what the host is, read in one round trip by a read-only script, and the
//! verdict on it. The script prints `key=value` lines; [`Facts::parse`] reads them and
//! [`Facts::check`] says what is wrong, and how to fix it, before anything is written.

use std::collections::BTreeMap;

/// The read-only probe, run as root (through `sudo -n` for another user). `$1` is the install
/// directory, `$2` the SSH connection (`client port server port`). Every line is `key=value`; a
/// value never holds a newline.
pub const PROBE: &str = r#"
dir="$1"
echo "ssh_connection=$2"
echo "machine_id=$(cat /etc/machine-id 2>/dev/null)"
. /etc/os-release 2>/dev/null
echo "os=${ID:-unknown}"
echo "os_version=${VERSION_ID:-}"
echo "kernel=$(uname -s)"
echo "arch=$(uname -m)"
if command -v docker >/dev/null 2>&1; then
  echo "docker=present"
  v=$(docker version --format '{{.Server.Version}}' 2>&1 | head -n 1 | tr -d '\r')
  if docker info >/dev/null 2>&1; then echo "docker_daemon=$v"; else echo "docker_daemon_error=$v"; fi
  c=$(docker compose version --short 2>/dev/null | head -n 1)
  if [ -n "$c" ]; then echo "compose=$c"; fi
  r=$(docker ps --filter label=com.docker.compose.project=frameworks-edge --format '{{.Names}}' 2>/dev/null | tr '\n' ' ')
  echo "edge_containers=$r"
fi
if command -v ss >/dev/null 2>&1; then
  ss -Hltnp 2>/dev/null | while read -r _ _ _ local _ users; do
    case "$local" in
      *:80|*:443) echo "listen=${local##*:} ${users}" ;;
    esac
  done
else
  echo "ss=missing"
fi
# Free space where the edge writes: Docker's data root (images, volumes, logs) and the install
# directory (or its nearest existing parent). `disk=ROLE TOTAL_KIB AVAIL_KIB MOUNT_POINT`.
droot=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null)
for spec in "docker ${droot:-/var/lib/docker}" "install $dir"; do
  role=${spec%% *}
  p=${spec#* }
  while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done
  df -Pk "$p" 2>/dev/null | tail -n 1 | while read -r _ total _ avail _ mnt; do
    echo "disk=$role $total $avail $mnt"
  done
done
if [ -f "$dir/.edge.env" ]; then
  sed -n 's/^NODE_ID=\(.*\)$/enrolled=\1/p' "$dir/.edge.env"
fi
echo "probe=done"
"#;

/// Free space the edge needs where Docker keeps its data: images, recordings, container logs.
const DOCKER_FREE_GIB: u64 = 20;
/// And where it is installed: configuration, certificates, Helmsman's state.
const INSTALL_FREE_GIB: u64 = 1;

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub os: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    pub docker: bool,
    /// The daemon's version when it answered.
    pub daemon: Option<String>,
    /// Why it did not.
    pub daemon_error: Option<String>,
    pub compose: Option<String>,
    /// Containers of our own edge stack that run now.
    pub edge_containers: Vec<String>,
    /// Port → who listens there (`ss`'s users field), for 80 and 443.
    pub listening: BTreeMap<u16, String>,
    /// Whether `ss` was there to tell.
    pub ports_known: bool,
    /// The filesystems the edge writes to, by role (`docker`, `install`).
    pub disks: BTreeMap<String, Disk>,
    /// The node id of an edge already installed here.
    pub enrolled: Option<String>,
    /// The host's address on the SSH connection: what it registers as its external address.
    pub external_ip: Option<String>,
    /// `/etc/machine-id`, hashed before it leaves this machine (the host fingerprint).
    pub machine_id: Option<String>,
}

/// One filesystem as `df` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub avail_kib: u64,
    pub mount: String,
}

/// Why a host cannot take the edge, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub what: String,
    pub fix: String,
}

impl Facts {
    /// Reads the probe's output; `None` when it did not run to its end.
    pub fn parse(out: &str) -> Option<Facts> {
        let mut facts = Facts {
            ports_known: true,
            ..Facts::default()
        };
        let mut done = false;
        for line in out.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key {
                "os" => facts.os = value.into(),
                "os_version" => facts.os_version = value.into(),
                "kernel" => facts.kernel = value.into(),
                "arch" => facts.arch = value.into(),
                "docker" => facts.docker = true,
                "docker_daemon" => facts.daemon = Some(value.into()),
                "docker_daemon_error" => facts.daemon_error = Some(value.into()),
                "compose" if !value.is_empty() => facts.compose = Some(value.into()),
                "edge_containers" => {
                    facts.edge_containers = value.split_whitespace().map(str::to_string).collect()
                }
                "listen" => {
                    let (port, users) = value.split_once(' ').unwrap_or((value, ""));
                    if let Ok(port) = port.parse() {
                        let holder = facts.listening.entry(port).or_default();
                        if holder.is_empty() {
                            *holder = holder_name(users);
                        }
                    }
                }
                "ss" => facts.ports_known = false,
                "disk" => {
                    let mut parts = value.splitn(4, ' ');
                    if let (Some(role), Some(_total), Some(Ok(avail_kib)), Some(mount)) = (
                        parts.next(),
                        parts.next(),
                        parts.next().map(str::parse),
                        parts.next(),
                    ) {
                        let disk = Disk {
                            avail_kib,
                            mount: mount.into(),
                        };
                        facts.disks.insert(role.into(), disk);
                    }
                }
                "enrolled" if !value.is_empty() => facts.enrolled = Some(value.into()),
                "ssh_connection" => {
                    facts.external_ip = value
                        .split_whitespace()
                        .nth(2)
                        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                        .map(str::to_string)
                }
                "machine_id" if !value.is_empty() => facts.machine_id = Some(value.into()),
                "probe" => done = value == "done",
                _ => {}
            }
        }
        done.then_some(facts)
    }

    /// Everything that stops the edge from being installed here; empty when the host is fit.
    pub fn check(&self) -> Vec<Refusal> {
        let mut refusals = Vec::new();
        let mut refuse = |what: String, fix: &str| {
            refusals.push(Refusal {
                what,
                fix: fix.into(),
            })
        };
        if self.kernel != "Linux" {
            refuse(
                format!("the host runs {:?}, not Linux", self.kernel),
                "use a Linux server (Ubuntu 22.04 or later, Debian 12)",
            );
        }
        if !matches!(self.arch.as_str(), "x86_64" | "aarch64") {
            refuse(
                format!("architecture {:?} is not supported", self.arch),
                "use an x86_64 or aarch64 server",
            );
        }
        if !self.docker {
            refuse(
                "Docker is not installed".into(),
                "install Docker Engine (https://docs.docker.com/engine/install/) and run again",
            );
        } else {
            if self.daemon.is_none() {
                let why = self.daemon_error.as_deref().unwrap_or("no answer");
                refuse(
                    format!("the Docker daemon does not answer: {why}"),
                    "start it (`sudo systemctl enable --now docker`) and run again",
                );
            }
            if self.compose.is_none() {
                refuse(
                    "`docker compose` is not available".into(),
                    "install the Docker Compose plugin (package docker-compose-plugin) and run again",
                );
            }
        }
        let ours = !self.edge_containers.is_empty();
        for port in [80, 443] {
            if let Some(holder) = self.listening.get(&port) {
                if !ours {
                    let who = if holder.is_empty() {
                        "another program".to_string()
                    } else {
                        holder.clone()
                    };
                    refuse(
                        format!("port {port} is in use by {who}"),
                        "stop that service (or move it to another port): the edge's Caddy needs 80 and 443",
                    );
                }
            }
        }
        // What each filesystem must hold: the needs of the roles on it added up, so Docker's
        // data and the install directory on one disk are counted once, together.
        let mut needs: BTreeMap<&str, (u64, Vec<&str>, &Disk)> = BTreeMap::new();
        for (role, gib, what) in [
            ("docker", DOCKER_FREE_GIB, "Docker's data"),
            ("install", INSTALL_FREE_GIB, "the install directory"),
        ] {
            if let Some(disk) = self.disks.get(role) {
                let need = needs.entry(&disk.mount).or_insert((0, Vec::new(), disk));
                need.0 += gib;
                need.1.push(what);
            }
        }
        for (mount, (gib, what, disk)) in needs {
            if disk.avail_kib < gib * 1024 * 1024 {
                refuse(
                    format!(
                        "{mount} has {:.1} GiB free; {} {} {gib} GiB there",
                        disk.avail_kib as f64 / (1024.0 * 1024.0),
                        what.join(" and "),
                        if what.len() > 1 { "need" } else { "needs" }
                    ),
                    "free space there (old images: `docker system prune`) or grow the disk",
                );
            }
        }
        refusals
    }

    /// One line for the progress display.
    pub fn summary(&self) -> String {
        let daemon = self.daemon.as_deref().unwrap_or("-");
        let compose = self.compose.as_deref().unwrap_or("-");
        format!(
            "{} {} {}, docker {daemon}, compose {compose}",
            self.os, self.os_version, self.arch
        )
    }
}

/// The program named in `ss`'s users field (`users:(("nginx",pid=1,fd=6),...)`).
fn holder_name(users: &str) -> String {
    users
        .split('"')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIT: &str = "ssh_connection=198.51.100.4 50022 203.0.113.7 22\nos=ubuntu\nos_version=24.04\nkernel=Linux\narch=x86_64\ndocker=present\n\
        docker_daemon=27.1.1\ncompose=2.29.1\nedge_containers=\n\
        disk=docker 104857600 73400320 /\ndisk=install 104857600 73400320 /\nprobe=done\n";

    #[test]
    fn a_fit_host_passes() {
        let facts = Facts::parse(FIT).expect("complete");
        assert_eq!(facts.check(), []);
        assert_eq!(
            facts.summary(),
            "ubuntu 24.04 x86_64, docker 27.1.1, compose 2.29.1"
        );
        assert_eq!(facts.enrolled, None);
        assert_eq!(facts.external_ip.as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn an_unfinished_probe_is_not_read() {
        assert_eq!(Facts::parse("os=ubuntu\nkernel=Linux\n"), None);
    }

    #[test]
    fn each_problem_is_named_with_its_fix() {
        let out = FIT
            .replace(
                "docker_daemon=27.1.1",
                "docker_daemon_error=Cannot connect to the Docker daemon",
            )
            .replace("compose=2.29.1\n", "")
            .replace(" 104857600 73400320 /", " 104857600 5242880 /")
            .replace(
                "probe=done",
                "listen=443 users:((\"nginx\",pid=812,fd=7))\nlisten=80 \nprobe=done",
            );
        let refusals = Facts::parse(&out).expect("complete").check();
        let what: Vec<&str> = refusals.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "the Docker daemon does not answer: Cannot connect to the Docker daemon",
                "`docker compose` is not available",
                "port 80 is in use by another program",
                "port 443 is in use by nginx",
                "/ has 5.0 GiB free; Docker's data and the install directory need 21 GiB there",
            ]
        );
        assert!(refusals.iter().all(|r| !r.fix.is_empty()));
    }

    #[test]
    fn disks_are_judged_by_what_each_holds() {
        // Docker's data on a big disk of its own, nearly full in share but with room: fine. The
        // install directory's filesystem with half a GiB: refused, for that directory alone.
        let out = FIT
            .replace(
                "disk=docker 104857600 73400320 /",
                "disk=docker 2147483648 31457280 /srv/docker data",
            )
            .replace(
                "disk=install 104857600 73400320 /",
                "disk=install 8388608 524288 /",
            );
        let facts = Facts::parse(&out).expect("complete");
        assert_eq!(facts.disks["docker"].mount, "/srv/docker data");
        let what: Vec<String> = facts.check().into_iter().map(|r| r.what).collect();
        assert_eq!(
            what,
            ["/ has 0.5 GiB free; the install directory needs 1 GiB there"]
        );
    }

    #[test]
    fn ports_held_by_our_own_stack_are_fine_and_an_install_is_recognised() {
        let out = FIT
            .replace(
                "edge_containers=",
                "edge_containers=frameworks-edge_caddy_1 ",
            )
            .replace(
                "probe=done",
                "listen=443 users:((\"caddy\",pid=9,fd=7))\nenrolled=0a1b2c3d4e5f\nprobe=done",
            );
        let facts = Facts::parse(&out).expect("complete");
        assert_eq!(facts.check(), []);
        assert_eq!(facts.enrolled.as_deref(), Some("0a1b2c3d4e5f"));
        assert_eq!(facts.listening[&443], "caddy");
    }

    #[test]
    fn no_docker_and_a_foreign_system() {
        let out = "os=freebsd\nkernel=FreeBSD\narch=riscv64\nprobe=done\n";
        let what: Vec<String> = Facts::parse(out)
            .expect("complete")
            .check()
            .into_iter()
            .map(|r| r.what)
            .collect();
        assert_eq!(
            what,
            [
                "the host runs \"FreeBSD\", not Linux",
                "architecture \"riscv64\" is not supported",
                "Docker is not installed",
            ]
        );
    }
}
