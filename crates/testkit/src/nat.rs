//! A real 1:1 NAT on one machine, for testing what crosses it: a network namespace (the
//! viewer's network) joined to this one by a veth pair, a private address for the server,
//! and a public address that the kernel's NAT (iptables DNAT) forwards to the private
//! one. From the viewer's network only the public address is reachable, as from the
//! internet to a cloud VM.
//!
//! The link can be shaped as a slow network's is ([`NatLab::limit_rate`]: a token bucket
//! on what reaches the viewer).
//!
//! Needs root, `ip` (iproute2), `iptables` and, to shape, `tc`. Everything is removed on
//! drop.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};

use nix::sched::{CloneFlags, setns};

use crate::system::{run, words};

/// The namespace, links and NAT rule of one lab.
#[derive(Debug)]
pub struct NatLab {
    namespace: String,
    host_link: String,
    /// The viewer's address, inside the namespace.
    pub viewer_ip: Ipv4Addr,
    /// The server's private address (on this machine, unreachable from the viewer).
    pub private_ip: Ipv4Addr,
    /// The public address the NAT forwards to `private_ip`.
    pub public_ip: Ipv4Addr,
    nat_rule: Vec<String>,
}

impl NatLab {
    /// Builds the lab; fails with what could not be done (not root, no iptables, ...).
    pub fn create() -> io::Result<NatLab> {
        let n = std::process::id() % 250;
        let namespace = format!("webgear-nat-{n}");
        let host_link = format!("wgnat{n}h");
        let viewer_link = format!("wgnat{n}v");
        let (host_ip, viewer_ip) = (Ipv4Addr::new(10, 201, n as u8, 1), Ipv4Addr::new(10, 201, n as u8, 2));
        let private_ip = Ipv4Addr::new(10, 203, n as u8, 1);
        let public_ip = Ipv4Addr::new(10, 202, n as u8, 1);
        let nat_rule: Vec<String> = ["-t", "nat", "PREROUTING", "-d", &public_ip.to_string(), "-j", "DNAT"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(["--to-destination".to_owned(), private_ip.to_string()])
            .collect();
        let lab = NatLab { namespace, host_link, viewer_ip, private_ip, public_ip, nat_rule };
        // Leftovers of an earlier run that did not clean up.
        lab.teardown();
        let ns = lab.namespace.as_str();
        let in_ns = |args: &[&str]| {
            [&["netns", "exec", ns, "ip"][..], args].concat().iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
        };
        let steps: Vec<(&str, Vec<String>)> = vec![
            ("ip", words(&["netns", "add", ns])),
            ("ip", words(&["link", "add", &lab.host_link, "type", "veth", "peer", "name", &viewer_link])),
            ("ip", words(&["link", "set", &viewer_link, "netns", ns])),
            ("ip", words(&["addr", "add", &format!("{host_ip}/24"), "dev", &lab.host_link])),
            // The private address sits on this machine, outside every route the viewer has.
            ("ip", words(&["addr", "add", &format!("{private_ip}/32"), "dev", &lab.host_link])),
            ("ip", words(&["link", "set", &lab.host_link, "up"])),
            ("ip", in_ns(&["addr", "add", &format!("{viewer_ip}/24"), "dev", &viewer_link])),
            ("ip", in_ns(&["link", "set", &viewer_link, "up"])),
            ("ip", in_ns(&["link", "set", "lo", "up"])),
            ("ip", in_ns(&["route", "add", &format!("{public_ip}/32"), "via", &host_ip.to_string()])),
            ("iptables", lab.rule_args("-A")),
        ];
        for (program, args) in steps {
            run(program, &args)?;
        }
        Ok(lab)
    }

    /// A UDP socket inside the viewer's network, bound to the viewer's address.
    pub fn viewer_socket(&self) -> io::Result<UdpSocket> {
        let path = format!("/var/run/netns/{}", self.namespace);
        let viewer_ip = self.viewer_ip;
        // A thread of its own enters the namespace; the socket stays in it afterwards.
        std::thread::spawn(move || -> io::Result<UdpSocket> {
            let namespace = File::open(&path)?;
            setns(namespace, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            UdpSocket::bind((viewer_ip, 0))
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// Lets what reaches the viewer through at `rate` (tc's units: `500kbit`) with a router
    /// buffer of `buffer` (`32kb`); what does not fit is dropped, as by a slow link's router.
    /// Given again, the new rate replaces the old.
    pub fn limit_rate(&self, rate: &str, buffer: &str) -> io::Result<()> {
        let args =
            ["qdisc", "replace", "dev", &self.host_link, "root", "tbf", "rate", rate, "burst", "16kb", "limit", buffer];
        run("tc", &words(&args))
    }

    fn rule_args(&self, action: &str) -> Vec<String> {
        let mut args = self.nat_rule.clone();
        args.insert(2, action.to_owned());
        args
    }

    fn teardown(&self) {
        // Each step may find nothing to remove.
        let _ = run("iptables", &self.rule_args("-D"));
        let _ = run("ip", &words(&["link", "del", &self.host_link]));
        let _ = run("ip", &words(&["netns", "del", &self.namespace]));
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        self.teardown();
    }
}
