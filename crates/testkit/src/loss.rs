//! Packet loss on one machine, made by the kernel: an iptables rule drops a share of the
//! UDP packets leaving one local port, at random (the `statistic` match), as a lossy link
//! would. Packets sent in one segmented send (UDP GSO) pass the rule as one, so a loss
//! takes a run of packets at once, as a burst of loss does.
//!
//! Needs root and `iptables`. The rule is removed on drop.

use std::io;

use crate::system::{output, run};

/// A rule dropping packets from one UDP port while it lives.
#[derive(Debug)]
pub struct PacketLoss {
    rule: Vec<String>,
}

impl PacketLoss {
    /// Drops each UDP packet sent from local `port` with `probability` (0 to 1).
    pub fn from_udp_port(port: u16, probability: f64) -> io::Result<PacketLoss> {
        let rule = [
            "OUTPUT",
            "-p",
            "udp",
            "--sport",
            &port.to_string(),
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &format!("{probability:.4}"),
            "-j",
            "DROP",
        ]
        .map(str::to_owned)
        .to_vec();
        let loss = PacketLoss { rule };
        run("iptables", &loss.args("-I"))?;
        Ok(loss)
    }

    /// How many packets the rule has dropped so far.
    pub fn dropped(&self) -> io::Result<u64> {
        let listing = output("iptables", &["-L", "OUTPUT", "-v", "-x", "-n"])?;
        let port = &self.rule[4];
        listing
            .lines()
            .find(|line| line.contains(&format!("spt:{port} ")) && line.contains("statistic"))
            .and_then(|line| line.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no loss rule for port {port} in: {listing}")))
    }

    fn args(&self, action: &str) -> Vec<String> {
        [vec![action.to_owned()], self.rule.clone()].concat()
    }
}

impl Drop for PacketLoss {
    fn drop(&mut self) {
        // Nothing to do if it is already gone.
        let _ = run("iptables", &self.args("-D"));
    }
}
