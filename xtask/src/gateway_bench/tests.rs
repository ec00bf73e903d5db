//! The harness's own checks: wrk's output, the configs, /proc readings.

use super::files::*;
use super::load::*;
use super::*;

const WRK_OUTPUT: &str = "\
Running 5s test @ https://127.0.0.1:8443/auth/bench
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
Latency     2.43ms    1.02ms  20.11ms   85.00%
Req/Sec    13.25k     1.01k   14.50k    72.00%
  Latency Distribution
 50%  812.00us
 75%    2.80ms
 90%    3.41ms
 99%    1.02s
  65891 requests in 5.00s, 11.06MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  13173.15
Transfer/sec:      2.21MB
";

#[test]
fn parses_wrk_output() {
    let w = parse_wrk(WRK_OUTPUT).unwrap();
    assert_eq!(w.rps, 13173.15);
    assert_eq!(w.requests, 65891);
    assert_eq!(w.non_2xx, 12);
    assert_eq!(w.socket_errors, 4);
    assert!((w.p50_ms - 0.812).abs() < 1e-9);
    assert_eq!(w.p75_ms, 2.8);
    assert_eq!(w.p90_ms, 3.41);
    assert_eq!(w.p99_ms, 1020.0);
}

#[test]
fn a_clean_run_has_no_errors_and_missing_lines_are_errors() {
    let clean: String = WRK_OUTPUT
        .lines()
        .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
        .map(|l| format!("{l}\n"))
        .collect();
    let w = parse_wrk(&clean).unwrap();
    assert_eq!((w.non_2xx, w.socket_errors), (0, 0));
    let no_latency: String = WRK_OUTPUT
        .lines()
        .filter(|l| !l.contains("99%"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(parse_wrk(&no_latency).is_err());
    assert!(parse_wrk("").is_err());
}

#[test]
fn reads_wrk_durations() {
    assert_eq!(duration_ms("250.00us"), Some(0.25));
    assert_eq!(duration_ms("3.50ms"), Some(3.5));
    assert_eq!(duration_ms("2.00s"), Some(2000.0));
    assert_eq!(duration_ms("1.00m"), Some(60_000.0));
    assert_eq!(duration_ms("fast"), None);
}

#[test]
fn configs_name_the_same_key_paths_and_limits() {
    let dir = Path::new("/tmp/gw");
    let policy = policy_toml("ab12");
    assert!(policy.contains("hash = \"sha256:ab12\""));
    assert!(policy.contains(&format!("rate = {RATE_PER_SECOND}")));
    let nginx = front_nginx_conf(dir, &dir.join("c.pem"), &dir.join("k.pem"));
    assert!(nginx.contains(&format!("\"{API_KEY}\" 1;")));
    assert!(nginx.contains(&format!("rate={RATE_PER_SECOND}r/s")));
    assert!(nginx.contains("if ($key_ok = 0) { return 401; }"));
    assert!(nginx.contains(&format!("worker_processes {FRONT_WORKERS};")));
    for f in FRONTS {
        let prefix = f.path().rsplit_once('/').map_or("", |(p, _)| p);
        assert!(policy.contains(&format!("path_prefix = \"{prefix}\"")));
        assert!(nginx.contains(&format!("location {prefix}/ {{")));
    }
    let daemon = daemon_toml(
        dir,
        Path::new("/sys/fs/bpf/x"),
        &dir.join("policy.toml"),
        &dir.join("c.pem"),
        &dir.join("k.pem"),
    );
    assert!(daemon.contains(&format!("listen = \"{LOOPBACK}:{GATEWAY_PORT}\"")));
    assert!(daemon.contains(&format!("run_as = \"{RUN_AS}\"")));
}

#[test]
fn reads_active_opens() {
    let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens\n\
                Tcp: 1 200 120000 -1 77 70\n";
    assert_eq!(active_opens(snmp), Some(77));
    assert_eq!(active_opens("Ip: 1\n"), None);
}

#[test]
fn reads_its_own_cpu_time() {
    let me = std::process::id() as i32;
    let (ppid, _) = proc_stat(me).unwrap();
    assert!(ppid > 0);
    // Spin a little so the process has at least one tick.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(50) {
        std::hint::black_box(start.elapsed());
    }
    assert!(tree_cpu_ticks(me) > 0);
}
