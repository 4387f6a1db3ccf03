//! `waggle bench` against a real `waggle dev` node: the figures a benchmark report quotes come out of
//! this code, so its open-loop schedule and its medians are checked end to end, not just computed.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAGGLE: &str = env!("CARGO_BIN_EXE_waggle");

/// A `waggle dev` node on free loopback ports, stopped when dropped.
struct DevNode {
    child: Child,
    grpc: String,
    management: String,
}

impl DevNode {
    fn start(dir: &Path) -> DevNode {
        let ports: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs: Vec<String> = ports.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
        drop(ports);
        let child = Command::new(WAGGLE)
            .args(["dev", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--grpc-addr", &addrs[0], "--command-addr", &addrs[1], "--management-addr", &addrs[2]])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("node.log")).unwrap())
            .spawn()
            .expect("waggle dev starts");
        let node = DevNode { child, grpc: addrs[0].clone(), management: addrs[2].clone() };
        node.wait_until_ready(dir);
        node
    }

    fn wait_until_ready(&self, dir: &Path) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut stream) = std::net::TcpStream::connect(&self.management) {
                let _ = stream.write_all(b"GET /health/ready HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.contains(" 200 ") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("waggle dev was not ready within 30 s:\n{}", std::fs::read_to_string(dir.join("node.log")).unwrap());
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_open_loop_run_keeps_to_its_rate_and_repeated_runs_end_with_their_median() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path());
    let rate = 40.0;
    let output = Command::new(WAGGLE)
        .args(["bench", "--gateway", &node.grpc, "--management", &node.management])
        .args(["--in-flight", "8", "--rate", "40", "--runs", "2", "--duration", "2", "--warmup", "1", "--json"])
        .arg("--probe-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "waggle bench failed: {}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<serde_json::Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "two runs and their median: {rows:?}");

    for run in &rows[..2] {
        assert_eq!(run["offered_per_second"], rate);
        assert!(run.get("median_of").is_none(), "{run}");
        let achieved = run["instances_per_second"].as_f64().unwrap();
        // An open loop cannot complete more than it offers; a closed loop of 8 would do far more.
        assert!(achieved > 0.0 && achieved <= rate * 1.1, "{achieved}/s completed at {rate}/s offered: {run}");
        assert!(run["server_cpu_us_per_instance"].as_f64().unwrap() > 0.0, "{run}");
    }
    let median = &rows[2];
    assert_eq!(median["median_of"], 2);
    let mean_of_two = |field: &str| (rows[0][field].as_f64().unwrap() + rows[1][field].as_f64().unwrap()) / 2.0;
    for field in ["instances_per_second", "p50_ms", "p99_ms"] {
        let expected = mean_of_two(field);
        let got = median[field].as_f64().unwrap();
        assert!((got - expected).abs() < 1e-9, "median {field} {got}, expected {expected}");
    }
}

#[test]
fn a_rate_that_is_not_positive_is_refused() {
    for bad in ["0", "-5", "NaN", "fast"] {
        let output = Command::new(WAGGLE).args(["bench", &format!("--rate={bad}")]).output().unwrap();
        assert!(!output.status.success(), "--rate {bad} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("not a positive number of instances per second"), "--rate {bad}: {stderr}");
    }
}
