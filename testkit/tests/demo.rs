//! The `wsnorm-demo` binary as `scripts/run.sh` and wsnorm's tests start it: the strict backend
//! serves plain HTTP and refuses a WebSocket without a token, as the real backend does. (Having
//! this test also makes `cargo test` build the testkit's binaries that wsnorm's tests run.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn exchange(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_demo_backend_serves_health_and_refuses_a_websocket_without_a_token() {
    let addr = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsnorm-demo"))
        .args(["backend", "--quiet", "--bind", &addr])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the demo backend did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let health = exchange(
        &addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let refused = exchange(
        &addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
}
