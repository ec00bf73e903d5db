//! `xtask flood`: a UDP flood bounded in packets and in time, for the demo's attacker.

use anyhow::{Context, Result, ensure};
use std::{
    net::{SocketAddr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

#[derive(clap::Args)]
pub struct Args {
    /// Destination address and port
    #[arg(long)]
    target: SocketAddr,
    /// Packets per second
    #[arg(long, default_value_t = 1000)]
    pps: u64,
    /// Stop after this many seconds
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Stop after this many packets
    #[arg(long, default_value_t = 10_000)]
    max_packets: u64,
}

const MAX_PPS: u64 = 1_000_000;
const MAX_SECONDS: u64 = 600;
const MAX_PACKETS: u64 = 50_000_000;

pub fn flood(args: &Args) -> Result<()> {
    ensure!(
        (1..=MAX_PPS).contains(&args.pps),
        "--pps must be 1..={MAX_PPS}"
    );
    ensure!(
        args.seconds <= MAX_SECONDS,
        "--seconds must be at most {MAX_SECONDS}"
    );
    ensure!(
        args.max_packets <= MAX_PACKETS,
        "--max-packets must be at most {MAX_PACKETS}"
    );
    let local: SocketAddr = if args.target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local).context("bind the flood socket")?;
    let payload = [0x5a_u8; 64];
    let limit = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let (mut attempts, mut errors) = (0_u64, 0_u64);
    while attempts < args.max_packets && start.elapsed() < limit {
        let due = (start.elapsed().as_secs_f64() * args.pps as f64) as u64 + 1;
        while attempts < due.min(args.max_packets) {
            attempts += 1;
            if socket.send_to(&payload, args.target).is_err() {
                errors += 1;
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    println!(
        "flood: {} packets to {} in {:.1} s ({errors} send errors)",
        attempts - errors,
        args.target,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: SocketAddr, pps: u64, seconds: u64, max_packets: u64) -> Args {
        Args {
            target,
            pps,
            seconds,
            max_packets,
        }
    }

    #[test]
    fn stops_at_max_packets() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let start = Instant::now();
        flood(&args(rx.local_addr().unwrap(), 1000, 10, 50)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        let mut buf = [0_u8; 128];
        let mut received = 0;
        while rx.recv(&mut buf).is_ok() {
            received += 1;
        }
        assert_eq!(received, 50);
    }

    #[test]
    fn stops_at_the_time_limit() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        flood(&args(rx.local_addr().unwrap(), 10, 1, 1_000_000)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn refuses_unbounded_settings() {
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(flood(&args(target, 0, 1, 1)).is_err());
        assert!(flood(&args(target, 10, MAX_SECONDS + 1, 1)).is_err());
        assert!(flood(&args(target, 10, 1, MAX_PACKETS + 1)).is_err());
    }
}
