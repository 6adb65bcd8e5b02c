//! Acceptance: an OpenSSH client logs in to an sshd on 127.0.0.1 through a
//! source and a destination proxy and the local tunneling service.
//!
//! sshd runs in inetd mode (`sshd -i`), started by the test for each TCP
//! connection the destination proxy opens, so no fixed port is needed.
//! Needs `ssh`, `ssh-keygen` and `sshd` (packages openssh-client and
//! openssh-server; `scripts/setup-test.sh` installs them).

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

fn find_tool(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} not found: install openssh-client and openssh-server (scripts/setup-test.sh does)"
    );
}

fn keygen(path: &Path) {
    let ok = Command::new(find_tool("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs")
        .success();
    assert!(ok, "ssh-keygen failed");
}

/// A TCP listener that hands every connection to a fresh `sshd -i`.
fn inetd_sshd(dir: &Path) -> u16 {
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "HostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\nPidFile none\n\
             StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nLogLevel ERROR\n",
            dir = dir.display()
        ),
    )
    .expect("sshd_config");
    // Privilege separation directory sshd insists on.
    let _ = std::fs::create_dir_all("/run/sshd");
    let sshd = find_tool("sshd");
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let fd = OwnedFd::from(s);
            let Ok(fd2) = fd.try_clone() else { continue };
            let child = Command::new(&sshd)
                .args(["-i", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::from(fd))
                .stdout(Stdio::from(fd2))
                .stderr(Stdio::inherit())
                .spawn();
            if let Ok(mut c) = child {
                thread::spawn(move || c.wait());
            }
        }
    });
    port
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn openssh_logs_in_through_the_tunnel() {
    let _w = watchdog("openssh", Duration::from_secs(90));
    let dir = std::env::temp_dir().join(format!("lp-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    keygen(&dir.join("host_key"));
    keygen(&dir.join("client_key"));
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("authorize");
    let sshd_port = inetd_sshd(&dir);

    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH"]);
    let dest = proxy(
        &service,
        &tunnel.destination_token,
        &["-d", &format!("SSH={sshd_port}")],
        "dst",
    );
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        Duration::from_secs(20),
    );
    let source = proxy(&service, &tunnel.source_token, &["-m", "source"], "src");
    let port = listening_port(&source, "SSH");

    // 1 MiB through the SSH session, hashed on the far side.
    let data = Arc::new(random_bytes(11, 1 << 20));
    let mut ssh = Command::new(find_tool("ssh"))
        .args(["-F", "/dev/null", "-i"])
        .arg(dir.join("client_key"))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
            "-p",
            &port.to_string(),
            &format!("{}@127.0.0.1", current_user()),
            "echo logged-in-through-the-tunnel; sha256sum",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh runs");
    let mut stdin = ssh.stdin.take().expect("stdin");
    let d = data.clone();
    let feeder = thread::spawn(move || {
        stdin.write_all(&d).expect("feed ssh");
    });
    let out = ssh.wait_with_output().expect("ssh finishes");
    feeder.join().expect("fed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        source.stderr.all()
    );
    assert!(stdout.contains("logged-in-through-the-tunnel"), "{stdout}");
    let want: String = sha256(&data).iter().map(|b| format!("{b:02x}")).collect();
    assert!(stdout.contains(&want), "remote hash matches: {stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
