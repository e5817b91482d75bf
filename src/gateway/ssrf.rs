//! Which addresses the gateway may connect to on a client's behalf (remote images, see
//! `gateway::media`). The client chooses the URL, so only plainly public Internet addresses are
//! allowed: every IANA special-purpose block is refused, plus multicast, class E and the
//! deprecated IPv6 site-local block, and an IPv6 address that only carries an IPv4 address
//! (IPv4-mapped, IPv4-compatible, NAT64, 6to4) is judged by the IPv4 address it carries.
//!
//! The decision is a pure function of the address over the two tables below, without I/O or
//! allocation: the most specific row containing the address decides, and an address that no
//! row contains is public.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True when the gateway may connect to `ip` for an outside caller.
pub fn is_public(ip: IpAddr) -> bool {
    refusal(ip).is_none()
}

/// Why `ip` is not public (the table row that refuses it), or `None` when it is.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4, None),
        IpAddr::V6(v6) => {
            let row = v6_row(v6.to_bits())?;
            match row.rule {
                V6Rule::Refuse => Some(Refusal {
                    net: IpAddr::V6(Ipv6Addr::from_bits(row.net)),
                    len: row.len,
                    name: row.name,
                    spec: row.spec,
                    carried: None,
                }),
                V6Rule::CarriesIpv4 { shift } => {
                    // Truncation keeps exactly the 32 bits above `shift`: the carried address.
                    let carried = Ipv4Addr::from_bits((v6.to_bits() >> shift) as u32);
                    v4_refusal(carried, Some(carried))
                }
            }
        }
    }
}

/// The row that refused an address. Displays as "in 198.18.0.0/15 (Benchmarking, RFC 2544)",
/// or "carries 127.0.0.1, in 127.0.0.0/8 (Loopback, RFC 1122)" for an IPv6 address judged by
/// the IPv4 address inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub net: IpAddr,
    pub len: u8,
    /// The registry's name for the block.
    pub name: &'static str,
    pub spec: &'static str,
    /// The IPv4 address an IPv6 address carries, when that is what was refused.
    pub carried: Option<Ipv4Addr>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v4) = self.carried {
            write!(f, "carries {v4}, ")?;
        }
        write!(
            f,
            "in {}/{} ({}, {})",
            self.net, self.len, self.name, self.spec
        )
    }
}

fn v4_refusal(ip: Ipv4Addr, carried: Option<Ipv4Addr>) -> Option<Refusal> {
    let row = v4_row(ip.to_bits())?;
    Some(Refusal {
        net: IpAddr::V4(Ipv4Addr::from_bits(row.net)),
        len: row.len,
        name: row.name,
        spec: row.spec,
        carried,
    })
}

fn v4_row(bits: u32) -> Option<&'static V4Block> {
    IPV4_BLOCKS
        .iter()
        .filter(|b| b.contains(bits))
        .max_by_key(|b| b.len)
}

fn v6_row(bits: u128) -> Option<&'static V6Block> {
    IPV6_BLOCKS
        .iter()
        .filter(|b| b.contains(bits))
        .max_by_key(|b| b.len)
}

struct V4Block {
    net: u32,
    len: u8,
    name: &'static str,
    spec: &'static str,
}

impl V4Block {
    fn contains(&self, bits: u32) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        bits & mask == self.net
    }
}

struct V6Block {
    net: u128,
    len: u8,
    rule: V6Rule,
    name: &'static str,
    spec: &'static str,
}

impl V6Block {
    fn contains(&self, bits: u128) -> bool {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0);
        bits & mask == self.net
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V6Rule {
    /// Never public.
    Refuse,
    /// Public exactly when the IPv4 address in the 32 bits above bit `shift` (counted from the
    /// least significant end) is public.
    CarriesIpv4 { shift: u32 },
}

use V6Rule::{CarriesIpv4, Refuse};

/// The carried IPv4 address is the last 32 bits (IPv4-mapped, IPv4-compatible, NAT64 /96).
const LOW_32: V6Rule = CarriesIpv4 { shift: 0 };
/// 6to4: `2002:AABB:CCDD::/48` carries `AA.BB.CC.DD` in bits 16..48 (RFC 3056 §2).
const BITS_16_TO_48: V6Rule = CarriesIpv4 { shift: 80 };

const fn v4(o: [u8; 4], len: u8, name: &'static str, spec: &'static str) -> V4Block {
    V4Block {
        net: u32::from_be_bytes(o),
        len,
        name,
        spec,
    }
}

const fn v6(s: [u16; 8], len: u8, rule: V6Rule, name: &'static str, spec: &'static str) -> V6Block {
    V6Block {
        net: Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]).to_bits(),
        len,
        rule,
        name,
        spec,
    }
}

// Sources: the IANA IPv4 Special-Purpose Address Registry and the IANA IPv6 Special-Purpose
// Address Registry (RFC 6890, RFC 8190): https://www.iana.org/assignments/iana-ipv4-special-registry
// and https://www.iana.org/assignments/iana-ipv6-special-registry. Every row of both is here:
// the IPv6 registry as of its revision of 2024-10-22, plus 100:0:0:1::/64 (RFC 9780) and the
// IPv4 row 192.88.99.2/32 (RFC 6751) found in later copies. The test
// `registry_rows_are_all_in_the_tables` repeats the registries' prefixes in their own notation;
// update both when a registry changes.
//
// Rows are refused whatever the registry's "Globally Reachable" column says, except the IPv6
// rows that carry an IPv4 address, which that address decides. (::ffff:0:0/96 is marked not
// globally reachable because it never appears on the wire; a socket given one connects over
// IPv4 to the carried address.) Refused although marked globally reachable (True):
// - the anycast service addresses (PCP, TURN, DNS-SD SRP, AS112, AMT): anycast reaches the
//   nearest instance, which may well be the operator's own (the local NAT gateway answers
//   PCP; AS112 nodes are commonly run inside networks), and none of them serves images;
// - ORCHIDv2 and DETs (2001:20::/28, 2001:30::/28): identifiers, not locators; nothing is
//   reachable there except through a local overlay stack.
// Rows whose column is N/A or empty:
// - 192.88.99.0/24 (6to4 relay anycast, terminated 2015) and 2001:10::/28 (ORCHID, expired):
//   refused, for the anycast and identifier reasons above;
// - 2002::/16 (6to4): judged by the IPv4 address it carries, like NAT64's 64:ff9b::/96;
// - 2001::/32 (Teredo): refused rather than judged by the server and (obfuscated) client IPv4
//   addresses it carries. Packets to it travel over UDP through a Teredo relay or the host's
//   own Teredo client, a path with its own reach into local networks; Teredo is obsolete and
//   off by default on current systems, so no image host needs it; and the registry marks the
//   enclosing 2001::/23 not globally reachable.
// IPv4-translatable addresses under an operator's own NAT64 prefix (RFC 6052
// network-specific prefixes, RFC 6219) cannot be recognised from the address alone; a network
// using one must keep that prefix away from the gateway's outbound traffic itself.

/// IPv4: the special-purpose registry, plus multicast (its own registry, RFC 5771).
#[rustfmt::skip]
static IPV4_BLOCKS: &[V4Block] = &[
    v4([0, 0, 0, 0], 8, "\"This network\"", "RFC 791"),
    v4([0, 0, 0, 0], 32, "\"This host on this network\"", "RFC 1122"),
    v4([10, 0, 0, 0], 8, "Private-Use", "RFC 1918"),
    v4([100, 64, 0, 0], 10, "Shared Address Space", "RFC 6598"),
    v4([127, 0, 0, 0], 8, "Loopback", "RFC 1122"),
    v4([169, 254, 0, 0], 16, "Link Local", "RFC 3927"),
    v4([172, 16, 0, 0], 12, "Private-Use", "RFC 1918"),
    v4([192, 0, 0, 0], 24, "IETF Protocol Assignments", "RFC 6890"),
    v4([192, 0, 0, 0], 29, "IPv4 Service Continuity Prefix", "RFC 7335"),
    v4([192, 0, 0, 8], 32, "IPv4 dummy address", "RFC 7600"),
    v4([192, 0, 0, 9], 32, "Port Control Protocol Anycast", "RFC 7723"),
    v4([192, 0, 0, 10], 32, "Traversal Using Relays around NAT Anycast", "RFC 8155"),
    v4([192, 0, 0, 170], 32, "NAT64/DNS64 Discovery", "RFC 8880"),
    v4([192, 0, 0, 171], 32, "NAT64/DNS64 Discovery", "RFC 8880"),
    v4([192, 0, 2, 0], 24, "Documentation (TEST-NET-1)", "RFC 5737"),
    v4([192, 31, 196, 0], 24, "AS112-v4", "RFC 7535"),
    v4([192, 52, 193, 0], 24, "AMT", "RFC 7450"),
    v4([192, 88, 99, 0], 24, "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
    v4([192, 88, 99, 2], 32, "6a44-relay anycast address", "RFC 6751"),
    v4([192, 168, 0, 0], 16, "Private-Use", "RFC 1918"),
    v4([192, 175, 48, 0], 24, "Direct Delegation AS112 Service", "RFC 7534"),
    v4([198, 18, 0, 0], 15, "Benchmarking", "RFC 2544"),
    v4([198, 51, 100, 0], 24, "Documentation (TEST-NET-2)", "RFC 5737"),
    v4([203, 0, 113, 0], 24, "Documentation (TEST-NET-3)", "RFC 5737"),
    v4([224, 0, 0, 0], 4, "Multicast", "RFC 5771"),
    v4([240, 0, 0, 0], 4, "Reserved", "RFC 1112"),
    v4([255, 255, 255, 255], 32, "Limited Broadcast", "RFC 919"),
];

/// IPv6: the special-purpose registry, the forms that carry an IPv4 address, and everything
/// outside 2000::/3 (the only block IANA assigns global unicast from, RFC 4291 §2.4), which
/// covers multicast, site-local and blocks a future registry revision may add there.
#[rustfmt::skip]
static IPV6_BLOCKS: &[V6Block] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, Refuse, "Unspecified Address", "RFC 4291"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, Refuse, "Loopback Address", "RFC 4291"),
    // Deprecated, and routed by no one; a stack that still speaks it reaches the IPv4 address.
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, LOW_32, "IPv4-compatible Address (deprecated)", "RFC 4291"),
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, LOW_32, "IPv4-mapped Address", "RFC 4291"),
    // SIIT's old "IPv4-translated" form: refused whatever it carries (no use for it here).
    v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, Refuse, "IPv4-translated Address (obsolete)", "RFC 2765"),
    // A translator turns these into IPv4 packets to the carried address. RFC 6052 forbids
    // non-global IPv4 under the well-known prefix, but a translator is not bound to refuse it.
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, LOW_32, "IPv4-IPv6 Translat.", "RFC 6052"),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Refuse, "IPv4-IPv6 Translat. (local use)", "RFC 8215"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Refuse, "Discard-Only Address Block", "RFC 6666"),
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, Refuse, "Dummy IPv6 Prefix", "RFC 9780"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Refuse, "IETF Protocol Assignments", "RFC 2928"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Refuse, "TEREDO", "RFC 4380"),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128, Refuse, "Port Control Protocol Anycast", "RFC 7723"),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128, Refuse, "Traversal Using Relays around NAT Anycast", "RFC 8155"),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128, Refuse, "DNS-SD Service Registration Protocol Anycast", "RFC 9665"),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, Refuse, "Benchmarking", "RFC 5180"),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, Refuse, "AMT", "RFC 7450"),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, Refuse, "AS112-v6", "RFC 7535"),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, Refuse, "Deprecated (previously ORCHID)", "RFC 4843"),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, Refuse, "ORCHIDv2", "RFC 7343"),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28, Refuse, "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374"),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Refuse, "Documentation", "RFC 3849"),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, BITS_16_TO_48, "6to4", "RFC 3056"),
    v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48, Refuse, "Direct Delegation AS112 Service", "RFC 7534"),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Refuse, "Documentation", "RFC 9637"),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, Refuse, "Segment Routing (SRv6) SIDs", "RFC 9602"),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Refuse, "Unique-Local", "RFC 4193"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Refuse, "Link-Local Unicast", "RFC 4291"),
    // Not in the special-purpose registry.
    // Deprecated, but some stacks still route it inside a site.
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Refuse, "Site-Local (deprecated)", "RFC 3879"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Refuse, "Multicast", "RFC 4291"),
    // Everything outside 2000::/3, as three blocks; the more specific rows above win over them.
    v6([0, 0, 0, 0, 0, 0, 0, 0], 3, Refuse, "Not global unicast (outside 2000::/3)", "RFC 4291"),
    v6([0x4000, 0, 0, 0, 0, 0, 0, 0], 2, Refuse, "Not global unicast (outside 2000::/3)", "RFC 4291"),
    v6([0x8000, 0, 0, 0, 0, 0, 0, 0], 1, Refuse, "Not global unicast (outside 2000::/3)", "RFC 4291"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or_else(|e| panic!("test address {s:?}: {e}"))
    }

    fn public(s: &str) -> bool {
        is_public(ip(s))
    }

    fn v4_mask(len: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }

    fn v6_mask(len: u8) -> u128 {
        u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
    }

    #[test]
    fn rows_are_well_formed_prefixes_without_duplicates() {
        for (i, b) in IPV4_BLOCKS.iter().enumerate() {
            assert!(b.len <= 32, "{}", b.name);
            assert_eq!(b.net & !v4_mask(b.len), 0, "host bits set in {}", b.name);
            assert!(
                !IPV4_BLOCKS[..i]
                    .iter()
                    .any(|o| o.net == b.net && o.len == b.len),
                "duplicate row {}",
                b.name
            );
        }
        for (i, b) in IPV6_BLOCKS.iter().enumerate() {
            assert!(b.len <= 128, "{}", b.name);
            assert_eq!(b.net & !v6_mask(b.len), 0, "host bits set in {}", b.name);
            assert!(
                !IPV6_BLOCKS[..i]
                    .iter()
                    .any(|o| o.net == b.net && o.len == b.len),
                "duplicate row {}",
                b.name
            );
        }
    }

    /// Each row's first and last address are decided by that very row, unless a more specific
    /// row contains them; a row that carries an IPv4 address is judged by it. So no row is
    /// shadowed by another or mistyped into the wrong place.
    #[test]
    fn every_row_decides_its_own_addresses() {
        for b in IPV4_BLOCKS {
            for bits in [b.net, b.net | !v4_mask(b.len)] {
                let addr = Ipv4Addr::from_bits(bits);
                let r = refusal(IpAddr::V4(addr)).unwrap_or_else(|| panic!("{addr} allowed"));
                let nested = IPV4_BLOCKS
                    .iter()
                    .any(|o| o.len > b.len && o.contains(bits));
                if !nested {
                    assert_eq!((r.len, r.name), (b.len, b.name), "{addr}: {r}");
                }
            }
        }
        for b in IPV6_BLOCKS {
            match b.rule {
                Refuse => {
                    for bits in [b.net, b.net | !v6_mask(b.len)] {
                        let addr = Ipv6Addr::from_bits(bits);
                        let r =
                            refusal(IpAddr::V6(addr)).unwrap_or_else(|| panic!("{addr} allowed"));
                        let nested = IPV6_BLOCKS
                            .iter()
                            .any(|o| o.len > b.len && o.contains(bits));
                        if !nested {
                            assert_eq!((r.len, r.name), (b.len, b.name), "{addr}: {r}");
                        }
                    }
                }
                CarriesIpv4 { shift } => {
                    let with = |v4: [u8; 4]| {
                        let bits = b.net | (u128::from(u32::from_be_bytes(v4)) << shift);
                        IpAddr::V6(Ipv6Addr::from_bits(bits))
                    };
                    assert!(is_public(with([8, 8, 8, 8])), "{}", with([8, 8, 8, 8]));
                    for private in [[10, 0, 0, 1], [127, 0, 0, 1], [169, 254, 169, 254]] {
                        let addr = with(private);
                        let r = refusal(addr).unwrap_or_else(|| panic!("{addr} allowed"));
                        assert_eq!(r.carried, Some(Ipv4Addr::from(private)), "{addr}: {r}");
                    }
                }
            }
        }
    }

    /// The registries' prefixes, written as text and parsed by std, so that a mistyped table
    /// row (or a missing one) fails here.
    #[test]
    fn registry_rows_are_all_in_the_tables() {
        let ipv4_registry = [
            "0.0.0.0/8",
            "0.0.0.0/32",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.0.0/29",
            "192.0.0.8/32",
            "192.0.0.9/32",
            "192.0.0.10/32",
            "192.0.0.170/32",
            "192.0.0.171/32",
            "192.0.2.0/24",
            "192.31.196.0/24",
            "192.52.193.0/24",
            "192.88.99.0/24",
            "192.88.99.2/32",
            "192.168.0.0/16",
            "192.175.48.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "240.0.0.0/4",
            "255.255.255.255/32",
        ];
        let ipv6_registry = [
            "::1/128",
            "::/128",
            "::ffff:0:0/96",
            "64:ff9b::/96",
            "64:ff9b:1::/48",
            "100::/64",
            "100:0:0:1::/64",
            "2001::/23",
            "2001::/32",
            "2001:1::1/128",
            "2001:1::2/128",
            "2001:1::3/128",
            "2001:2::/48",
            "2001:3::/32",
            "2001:4:112::/48",
            "2001:10::/28",
            "2001:20::/28",
            "2001:30::/28",
            "2001:db8::/32",
            "2002::/16",
            "2620:4f:8000::/48",
            "3fff::/20",
            "5f00::/16",
            "fc00::/7",
            "fe80::/10",
        ];
        for row in ipv4_registry {
            let (net, len) = row.split_once('/').unwrap_or((row, "32"));
            let (net, len): (Ipv4Addr, u8) = (net.parse().unwrap(), len.parse().unwrap());
            assert!(
                IPV4_BLOCKS
                    .iter()
                    .any(|b| b.net == net.to_bits() && b.len == len),
                "{row} missing"
            );
        }
        for row in ipv6_registry {
            let (net, len) = row.split_once('/').unwrap_or((row, "128"));
            let (net, len): (Ipv6Addr, u8) = (net.parse().unwrap(), len.parse().unwrap());
            assert!(
                IPV6_BLOCKS
                    .iter()
                    .any(|b| b.net == net.to_bits() && b.len == len),
                "{row} missing"
            );
        }
    }

    #[test]
    fn the_addresses_named_in_the_issue_are_refused() {
        for (addr, why) in [
            ("198.18.0.1", "in 198.18.0.0/15 (Benchmarking, RFC 2544)"),
            (
                "64:ff9b::c0a8:1",
                "carries 192.168.0.1, in 192.168.0.0/16 (Private-Use, RFC 1918)",
            ),
            (
                "64:ff9b::a00:1",
                "carries 10.0.0.1, in 10.0.0.0/8 (Private-Use, RFC 1918)",
            ),
            (
                "64:ff9b::7f00:1",
                "carries 127.0.0.1, in 127.0.0.0/8 (Loopback, RFC 1122)",
            ),
            (
                "fec0::1",
                "in fec0::/10 (Site-Local (deprecated), RFC 3879)",
            ),
            (
                "::a00:1",
                "carries 10.0.0.1, in 10.0.0.0/8 (Private-Use, RFC 1918)",
            ),
            (
                "::7f00:1",
                "carries 127.0.0.1, in 127.0.0.0/8 (Loopback, RFC 1122)",
            ),
            (
                "::ffff:10.0.0.1",
                "carries 10.0.0.1, in 10.0.0.0/8 (Private-Use, RFC 1918)",
            ),
            (
                "2002:c0a8:0101::1",
                "carries 192.168.1.1, in 192.168.0.0/16 (Private-Use, RFC 1918)",
            ),
        ] {
            let r = refusal(ip(addr)).unwrap_or_else(|| panic!("{addr} allowed"));
            assert_eq!(r.to_string(), why, "{addr}");
        }
    }

    #[test]
    fn ordinary_public_addresses_are_allowed() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "64:ff9b::808:808",
            "64:ff9b::8.8.4.4",
            "2002:0808:0808::1",
            "::ffff:8.8.8.8",
            "::808:808",
        ] {
            assert!(public(addr), "{addr}: {:?}", refusal(ip(addr)));
        }
    }

    #[test]
    fn unspecified_loopback_and_mapped_forms_are_refused() {
        for addr in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "::",
            "::1",
            "::2",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:169.254.169.254",
            "::ffff:0:7f00:1", // SIIT IPv4-translated
            "::1:0:0",         // just past ::/96
            "::fffe:ffff:ffff",
            "::1:0:0:0",
            "64:ff9b::",
            "64:ff9b::ffff:ffff", // 255.255.255.255
            "64:ff9b:0:0:0:1::",  // just past 64:ff9b::/96
            "64:ff9b:1::808:808", // local-use NAT64, whatever it carries
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            "2002::1",           // carries 0.0.0.0
            "2002:7f00:1::",     // carries 127.0.0.1
            "2002:a9fe:a9fe::1", // carries 169.254.169.254
            "2002:c058:6301::1", // carries 192.88.99.1, the 6to4 relay anycast
            "2002:e000:1::1",    // carries 224.0.0.1
        ] {
            assert!(!public(addr), "{addr}");
        }
    }

    /// The edges of the blocks, where an off-by-one in a prefix or length would show.
    #[test]
    fn block_edges() {
        for (addr, expected_public) in [
            ("1.0.0.0", true),
            ("9.255.255.255", true),
            ("10.0.0.0", false),
            ("10.255.255.255", false),
            ("11.0.0.0", true),
            ("100.63.255.255", true),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("100.128.0.0", true),
            ("126.255.255.255", true),
            ("128.0.0.0", true),
            ("169.253.255.255", true),
            ("169.254.0.0", false),
            ("169.255.0.0", true),
            ("172.15.255.255", true),
            ("172.16.0.0", false),
            ("172.31.255.255", false),
            ("172.32.0.0", true),
            ("191.255.255.255", true),
            ("192.0.0.0", false),
            ("192.0.0.255", false),
            ("192.0.1.0", true),
            ("192.0.1.255", true),
            ("192.0.2.0", false),
            ("192.0.2.255", false),
            ("192.0.3.0", true),
            ("192.31.195.255", true),
            ("192.31.196.1", false),
            ("192.31.197.0", true),
            ("192.52.192.255", true),
            ("192.52.193.1", false),
            ("192.52.194.0", true),
            ("192.88.98.255", true),
            ("192.88.99.1", false),
            ("192.88.100.0", true),
            ("192.167.255.255", true),
            ("192.168.0.0", false),
            ("192.168.255.255", false),
            ("192.169.0.0", true),
            ("192.175.47.255", true),
            ("192.175.48.1", false),
            ("192.175.49.0", true),
            ("198.17.255.255", true),
            ("198.18.0.0", false),
            ("198.19.255.255", false),
            ("198.20.0.0", true),
            ("198.51.99.255", true),
            ("198.51.100.0", false),
            ("198.51.101.0", true),
            ("203.0.112.255", true),
            ("203.0.113.0", false),
            ("203.0.114.0", true),
            ("223.255.255.255", true),
            ("224.0.0.0", false),
            ("239.255.255.255", false),
            ("240.0.0.0", false),
            ("255.255.255.254", false),
            ("255.255.255.255", false),
            // IPv6 inside 2000::/3, where the edges matter (outside it everything is refused).
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2000::1", true),
            ("2001::1", false),
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:200::1", true),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:db8::", false),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:db9::", true),
            ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2003::", true),
            ("2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", true),
            ("2620:4f:8000::1", false),
            ("2620:4f:8001::", true),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("3fff::", false),
            ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("3fff:1000::", true),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("4000::", false),
            ("5f00::1", false),
            ("fc00::1", false),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fe80::1", false),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fec0::", false),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("ff02::1", false),
            ("100::1", false),
            ("100:0:0:1::1", false),
            ("100:0:0:2::1", false),
        ] {
            assert_eq!(
                public(addr),
                expected_public,
                "{addr}: {:?}",
                refusal(ip(addr))
            );
        }
    }

    #[test]
    fn the_reason_names_the_most_specific_row() {
        let r = refusal(ip("192.0.0.8")).unwrap();
        assert_eq!(
            r.to_string(),
            "in 192.0.0.8/32 (IPv4 dummy address, RFC 7600)"
        );
        let r = refusal(ip("192.0.0.200")).unwrap();
        assert_eq!(
            r.to_string(),
            "in 192.0.0.0/24 (IETF Protocol Assignments, RFC 6890)"
        );
        let r = refusal(ip("2001::5efe:a00:1")).unwrap();
        assert_eq!(r.to_string(), "in 2001::/32 (TEREDO, RFC 4380)");
        let r = refusal(ip("::")).unwrap();
        assert_eq!(r.to_string(), "in ::/128 (Unspecified Address, RFC 4291)");
    }
}
