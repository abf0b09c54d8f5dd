//! The records a DNS element holds: parsed from zone-file text by
//! hickory-proto, kept with their wire form ready to copy into answers, and
//! looked up by the lower-case wire form of a name, so that answering a
//! query needs no allocation.

use std::collections::{BTreeMap, HashMap};

use circuit_proto::dns::{MAX_RECORD_TEXT, MAX_RECORDS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding};
use hickory_proto::serialize::txt::Parser;

/// TTL of a record whose text gives none (as the original's parser did).
pub const DEFAULT_TTL: u32 = 3600;

/// Record type numbers the answer code uses.
pub mod rtype {
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
}

/// One record, as set: only its wire form is kept (about 40 bytes and the
/// wire bytes, where hickory-proto's `Record` takes 272 and more), and it
/// is decoded again for `peek`.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The whole record in wire form, names uncompressed, case as typed.
    pub wire: Box<[u8]>,
    /// Bytes of `wire` that are the owner name; what follows is type,
    /// class, TTL, length and data.
    pub owner_len: usize,
    /// Its type number.
    pub rtype: u16,
    /// For a CNAME: its target, lower-case wire form.
    pub target: Option<Box<[u8]>>,
}

impl Stored {
    /// The record, decoded from its wire form.
    pub fn record(&self) -> Option<Record> {
        Record::read(&mut BinDecoder::new(&self.wire)).ok()
    }

    /// The text `peek` shows: `name\tTTL\tclass\ttype\tdata`.
    pub fn text(&self) -> String {
        match self.record() {
            Some(r) => format!(
                "{}\t{}\t{}\t{}\t{}",
                r.name.to_ascii(),
                r.ttl,
                r.dns_class,
                r.record_type(),
                r.data
            ),
            None => format!("(a record of type {} that does not decode)", self.rtype),
        }
    }

    /// The part of the wire form after the owner name.
    pub fn tail(&self) -> &[u8] {
        &self.wire[self.owner_len..]
    }

    /// Its owner's lookup key: the owner name in lower case.
    pub fn key(&self) -> Box<[u8]> {
        self.wire[..self.owner_len].to_ascii_lowercase().into_boxed_slice()
    }

    /// The same record (same type, class and data), whatever the TTL.
    fn same(&self, other: &Stored) -> bool {
        let (a, b) = (self.tail(), other.tail());
        a.len() == b.len() && a[..4] == b[..4] && a[8..] == b[8..]
    }
}

/// The lower-case wire form of `name` (a lookup key).
pub fn key(name: &Name) -> Box<[u8]> {
    let mut buf = Vec::with_capacity(name.len() + 2);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::UncompressedLowercase);
    // A parsed name is at most 255 bytes: emitting it cannot fail.
    let _ = name.to_lowercase().emit(&mut enc);
    buf.into_boxed_slice()
}

/// Parses one record in zone-file syntax, like
/// `miek.nl. 3600 IN MX 10 mx.miek.nl.`; names without a final dot are
/// taken below the root, a missing TTL is [`DEFAULT_TTL`], a missing class
/// is IN. The error is one line saying what is wrong.
pub fn parse(text: &str) -> Result<Stored, String> {
    let shown = || {
        let mut s: String = text.chars().take(64).collect();
        if s.len() < text.len() {
            s.push('…');
        }
        s
    };
    if text.len() > MAX_RECORD_TEXT {
        return Err(format!(
            "record of {} bytes: at most {MAX_RECORD_TEXT} are taken",
            text.len()
        ));
    }
    if text.contains(['\n', '\r']) {
        return Err(format!(
            "record {:?} spans lines: give one record, on one line",
            shown()
        ));
    }
    let line = text.trim();
    if line.is_empty() {
        return Err("empty record: give one like \"miek.nl. 3600 IN MX 10 mx.miek.nl.\"".into());
    }
    if line.starts_with('$') {
        return Err(format!("{:?} is a zone-file directive, not a record", shown()));
    }
    if line.starts_with(';') {
        return Err(format!("{:?} is a comment, not a record", shown()));
    }
    // The whole text is one line (checked above), so the only directive
    // the parser sees is ours.
    let zone = format!("$TTL {DEFAULT_TTL}\n{line}\n");
    let (_, sets) = Parser::new(zone, None, Some(Name::root()))
        .parse()
        .map_err(|e| format!("invalid record {:?}: {}", shown(), one_line(&e.to_string())))?;
    let mut records = sets.into_values().flat_map(|set| set.into_iter());
    let (Some(record), None) = (records.next(), records.next()) else {
        return Err(format!("invalid record {:?}: not exactly one record", shown()));
    };
    if record.dns_class != DNSClass::IN {
        return Err(format!(
            "invalid record {:?}: class {} is not served, only IN",
            shown(),
            record.dns_class
        ));
    }
    let rtype = record.record_type();
    if matches!(
        rtype,
        RecordType::OPT | RecordType::ANY | RecordType::AXFR | RecordType::IXFR
    ) {
        return Err(format!("invalid record {:?}: type {rtype} is not data", shown()));
    }
    let mut wire = Vec::new();
    let mut enc = BinEncoder::new(&mut wire);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    enc.set_max_size(u16::MAX);
    record
        .emit(&mut enc)
        .map_err(|e| format!("invalid record {:?}: {}", shown(), one_line(&e.to_string())))?;
    let owner_len = key(&record.name).len();
    let target = match &record.data {
        RData::CNAME(c) => Some(key(&c.0)),
        _ => None,
    };
    Ok(Stored {
        wire: wire.into_boxed_slice(),
        owner_len,
        rtype: u16::from(rtype),
        target,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses a name as `unset` takes it: the final dot is optional.
pub fn parse_name(text: &str) -> Result<Box<[u8]>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty name: give one like miek.nl.".into());
    }
    let name = Name::parse(t, Some(&Name::root())).map_err(|e| format!("invalid name {t:?}: {e}"))?;
    Ok(key(&name))
}

/// The records of one name, in the order they were set.
#[derive(Debug, Default, Clone)]
pub struct Node {
    /// Its records.
    pub records: Vec<Stored>,
}

impl Node {
    /// Its CNAME record, if it has one.
    pub fn cname(&self) -> Option<&Stored> {
        self.records.iter().find(|r| r.rtype == rtype::CNAME)
    }
}

/// Every record of a DNS element.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    nodes: HashMap<Box<[u8]>, Node>,
    /// Names that exist only because names below them do (empty
    /// non-terminals), with how many held names are below each.
    above: HashMap<Box<[u8]>, u32>,
    count: usize,
}

/// The proper ancestors of a wire name, nearest first, the root last.
fn ancestors(wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = *wire.get(at)? as usize;
        if len == 0 {
            return None;
        }
        at += 1 + len;
        wire.get(at..)
    })
}

impl Zone {
    /// A zone holding `records`, checked as `insert` checks them.
    pub fn from_records(records: Vec<Stored>) -> Result<Zone, String> {
        let mut z = Zone::default();
        for r in records {
            z.insert(r)?;
        }
        Ok(z)
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when it holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records of a name, by its lower-case wire form.
    pub fn get(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
    }

    /// True when a name holds records or has names below it that do.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.nodes.contains_key(key) || self.above.contains_key(key)
    }

    /// Adds a record. The same record again (same name, type and data)
    /// replaces the first one, so its TTL can change. A name with a CNAME
    /// holds nothing else (RFC 1034 §3.6.2).
    pub fn insert(&mut self, rec: Stored) -> Result<(), String> {
        let key = rec.key();
        if let Some(node) = self.nodes.get_mut(&key) {
            if let Some(old) = node.records.iter_mut().find(|o| o.same(&rec)) {
                *old = rec;
                return Ok(());
            }
            let has_cname = node.cname().is_some();
            if rec.rtype == rtype::CNAME || has_cname {
                let why = if has_cname { "has a CNAME" } else { "has records" };
                let name = rec.record().map_or_else(String::new, |r| r.name.to_ascii());
                return Err(format!(
                    "{name} {why}: a name with a CNAME holds no other record (unset it first)"
                ));
            }
        }
        if self.count >= MAX_RECORDS {
            return Err(format!("this DNS element holds {MAX_RECORDS} records, its limit"));
        }
        self.count += 1;
        match self.nodes.get_mut(&key) {
            Some(node) => node.records.push(rec),
            None => {
                for a in ancestors(&key) {
                    *self.above.entry(a.into()).or_default() += 1;
                }
                self.nodes.insert(key, Node { records: vec![rec] });
            }
        }
        Ok(())
    }

    /// Removes every record of a name; answers how many there were.
    pub fn remove(&mut self, key: &[u8]) -> usize {
        let Some(node) = self.nodes.remove(key) else {
            return 0;
        };
        for a in ancestors(key) {
            if let Some(n) = self.above.get_mut(a) {
                *n -= 1;
                if *n == 0 {
                    self.above.remove(a);
                }
            }
        }
        self.count -= node.records.len();
        node.records.len()
    }

    /// The records as `peek` shows them, by lower-case name.
    pub fn texts(&self) -> BTreeMap<String, Vec<String>> {
        self.nodes
            .values()
            .filter_map(|n| {
                let first = n.records.first()?.record()?;
                let name = first.name.to_lowercase().to_ascii();
                Some((name, n.records.iter().map(Stored::text).collect()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_like_the_original() {
        let r = parse("miek.nl. 3600 IN MX 10 mx.miek.nl.").unwrap();
        assert_eq!(r.text(), "miek.nl.\t3600\tIN\tMX\t10 mx.miek.nl.");
        let r = parse("www.example.org A 192.0.2.1").unwrap();
        assert_eq!(r.text(), "www.example.org.\t3600\tIN\tA\t192.0.2.1");
        for ok in [
            "a.example. 60 IN AAAA 2001:db8::1",
            "a.example. IN CNAME b.example.",
            "example. 300 NS ns1.example.",
            "1.2.0.192.in-addr.arpa. PTR host.example.",
            "_sip._tcp.example. 86400 IN SRV 0 5 5060 sipserver.example.",
            "example. TXT \"v=spf1 -all\" \"second string\"",
            "example. CAA 0 issue \"letsencrypt.org\"",
            "example. 3600 IN SOA ns1.example. hostmaster.example. ( 1 7200 3600 1209600 300 )",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn bad_records_say_why_in_one_line() {
        for (bad, says) in [
            ("miek.nl. 3600 IN MX mx.miek.nl.", "invalid record"),
            ("miek.nl. 3600 IN BOGUS 1", "BOGUS"),
            ("a.example. A 300.1.1.1", "invalid record"),
            ("", "empty record"),
            ("$INCLUDE /etc/passwd", "directive"),
            ("a. A 1.2.3.4\nb. A 1.2.3.4", "spans lines"),
            ("a. CH A 1.2.3.4", "only IN"),
            ("; nothing", "comment"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let long = format!("a. TXT \"{}\"", "x".repeat(MAX_RECORD_TEXT));
        assert!(parse(&long).unwrap_err().contains("at most"));
    }

    #[test]
    fn zone_keeps_names_case_insensitively() {
        let mut z = Zone::default();
        z.insert(parse("Miek.NL. MX 10 mx.miek.nl.").unwrap()).unwrap();
        z.insert(parse("miek.nl. MX 20 mx2.miek.nl.").unwrap()).unwrap();
        z.insert(parse("miek.nl. 60 MX 20 mx2.miek.nl.").unwrap()).unwrap();
        assert_eq!(z.len(), 2);
        let texts = z.texts();
        assert_eq!(
            texts["miek.nl."],
            [
                "miek.nl.\t3600\tIN\tMX\t10 mx.miek.nl.",
                "miek.nl.\t60\tIN\tMX\t20 mx2.miek.nl."
            ]
        );
        z.insert(parse("a.b.miek.nl. A 192.0.2.1").unwrap()).unwrap();
        assert!(z.exists(&parse_name("b.miek.nl").unwrap()));
        assert!(!z.exists(&parse_name("c.miek.nl").unwrap()));
        assert_eq!(z.remove(&parse_name("MIEK.nl").unwrap()), 2);
        assert_eq!(z.remove(&parse_name("a.b.miek.nl.").unwrap()), 1);
        assert!(z.is_empty());
        assert!(!z.exists(&parse_name("b.miek.nl").unwrap()));
        assert!(!z.exists(&parse_name("nl").unwrap()));
    }

    #[test]
    fn cname_stands_alone() {
        let mut z = Zone::default();
        z.insert(parse("www.example. CNAME web.example.").unwrap()).unwrap();
        assert!(
            z.insert(parse("www.example. A 192.0.2.1").unwrap())
                .unwrap_err()
                .contains("CNAME")
        );
        assert!(z.insert(parse("www.example. CNAME other.example.").unwrap()).is_err());
        z.insert(parse("web.example. A 192.0.2.1").unwrap()).unwrap();
        assert!(
            z.insert(parse("web.example. CNAME x.example.").unwrap())
                .unwrap_err()
                .contains("has records")
        );
    }
}
