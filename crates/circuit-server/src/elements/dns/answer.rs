//! The answer to one DNS query, as a small authoritative server gives it:
//! pure (bytes in, bytes out), no socket, no allocation once `out` has
//! grown to its working size.
//!
//! - All records of the asked name and type; a CNAME (and what it leads
//!   to among our records, up to [`MAX_CHAIN`] links) for a name asked with
//!   another type; all records of the name for ANY (not RFC 8482's minimal
//!   answer: this server holds few records and answers what it has).
//! - NOERROR with no answer (NODATA) for a name that exists without that
//!   type, empty non-terminals included (RFC 8020); NXDOMAIN for an unknown
//!   name; both with the closest SOA in the authority section when there
//!   is one, its TTL the lesser of its TTL and minimum (RFC 2308).
//! - AA on every answer from our records. FORMERR for a malformed query
//!   (when its header can be read at all), NOTIMP for opcodes other than
//!   QUERY and for zone transfers, REFUSED for classes other than IN,
//!   BADVERS for EDNS versions other than 0. Responses (QR set) and
//!   packets shorter than a header are dropped.
//! - EDNS0 (RFC 6891): the client's payload size is honoured up to
//!   [`MAX_UDP`]; a UDP answer that does not fit goes out with TC set and
//!   no records, so the client asks again over TCP.
//!
//! The question is parsed here rather than by hickory-proto's `Message`,
//! which allocates for every section and name; records are copied from
//! their wire form prepared at `set` ([`super::zone`]), with a pointer to
//! the question's name for the owner, so the answer keeps the asker's case.

use super::zone::{Stored, Zone, rtype};

/// UDP payload this server accepts and sends at most (the DNS flag day's
/// 1232, which avoids fragmentation).
pub const MAX_UDP: usize = 1232;
/// UDP payload without EDNS.
const PLAIN_UDP: usize = 512;
/// CNAME links followed inside our records.
pub const MAX_CHAIN: usize = 8;

const HEADER: usize = 12;
const OPT: u16 = 41;
const OPT_LEN: usize = 11;

mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// BADVERS is 16: 0 in the header, 1 in the OPT's extended rcode.
    pub const BADVERS_EXT: u8 = 1;
}

mod qtype {
    pub const ANY: u16 = 255;
    pub const AXFR: u16 = 252;
    pub const IXFR: u16 = 251;
    pub const MAILB: u16 = 253;
    pub const MAILA: u16 = 254;
}

/// Where the query came from, which bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram: 512 bytes, or the EDNS payload size up to [`MAX_UDP`].
    Udp,
    /// A length-prefixed message: up to 65,535 bytes.
    Tcp,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Skips a name (labels or a compression pointer) starting at `at`;
/// answers where it ends.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *b.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return b.get(at + 1).map(|_| at + 2),
            l if l > 63 => return None,
            l => at += 1 + l,
        }
    }
    None
}

/// The query's question name in lower-case wire form, into `key`;
/// answers its length and where the name ends. Names in a question are
/// never compressed (there is nothing before them to point to).
fn read_qname(b: &[u8], key: &mut [u8; 255]) -> Option<(usize, usize)> {
    let mut at = HEADER;
    let mut n = 0;
    loop {
        let len = *b.get(at)? as usize;
        if len > 63 || n + 1 + len > key.len() {
            return None;
        }
        let label = b.get(at..at + 1 + len)?;
        for (k, c) in key[n..n + 1 + len].iter_mut().zip(label) {
            *k = c.to_ascii_lowercase();
        }
        key[n] = len as u8;
        n += 1 + len;
        at += 1 + len;
        if len == 0 {
            return Some((n, at));
        }
    }
}

/// What the query's additional section said of EDNS.
struct Edns {
    payload: u16,
    version: u8,
}

/// Reads the additional section (from `at`, `count` records): the OPT
/// record, if any. Other records (a TSIG we cannot check) are skipped.
/// `Err` for a malformed section or a second OPT.
fn read_additional(b: &[u8], mut at: usize, count: u16) -> Result<Option<Edns>, ()> {
    let mut edns = None;
    for _ in 0..count {
        let name_at = at;
        at = skip_name(b, at).ok_or(())?;
        let ty = u16_at(b, at).ok_or(())?;
        let class = u16_at(b, at + 2).ok_or(())?;
        let ttl_hi = b.get(at + 5).copied().ok_or(())?;
        let rdlen = u16_at(b, at + 8).ok_or(())? as usize;
        at += 10;
        if b.len() < at + rdlen {
            return Err(());
        }
        at += rdlen;
        if ty == OPT {
            if edns.is_some() || b[name_at] != 0 {
                return Err(());
            }
            edns = Some(Edns {
                payload: class,
                version: ttl_hi,
            });
        }
    }
    Ok(edns)
}

/// Writes the response header; the counts are filled in at the end.
fn header(out: &mut Vec<u8>, query: &[u8], aa: bool, rcode: u8) {
    let opcode_rd = query[2] & 0x79; // opcode and RD, as asked
    out.extend_from_slice(&query[..2]);
    out.push(0x80 | opcode_rd | if aa { 0x04 } else { 0 });
    out.push(rcode & 0x0F);
    out.extend_from_slice(&[0; 8]);
}

fn set_count(out: &mut [u8], section: usize, n: u16) {
    out[4 + 2 * section..6 + 2 * section].copy_from_slice(&n.to_be_bytes());
}

fn push_opt(out: &mut Vec<u8>, ext_rcode: u8) {
    let size = (MAX_UDP as u16).to_be_bytes();
    out.extend_from_slice(&[0, 0, 41, size[0], size[1], ext_rcode, 0, 0, 0, 0, 0]);
}

/// A response with no record: header, the question if there was one, the
/// OPT if the query had one.
fn bare(out: &mut Vec<u8>, query: &[u8], question: Option<usize>, rcode: u8, edns: bool, ext: u8) {
    out.clear();
    header(out, query, false, rcode);
    if let Some(end) = question {
        out.extend_from_slice(&query[HEADER..end]);
        set_count(out, 0, 1);
    }
    if edns {
        push_opt(out, ext);
        set_count(out, 3, 1);
    }
}

/// Appends records to `out` while they fit in `limit`, counting them.
struct Section<'o> {
    out: &'o mut Vec<u8>,
    limit: usize,
    count: u16,
    full: bool,
}

impl Section<'_> {
    /// A record whose owner is the question's name (a pointer to it).
    fn at_qname(&mut self, r: &Stored) {
        self.put(&[0xC0, HEADER as u8], r.tail());
    }

    /// A record with its own owner name.
    fn whole(&mut self, r: &Stored) {
        self.put(&[], &r.wire);
    }

    fn put(&mut self, owner: &[u8], rest: &[u8]) {
        if self.full || self.out.len() + owner.len() + rest.len() > self.limit || self.count == u16::MAX {
            self.full = true;
            return;
        }
        self.out.extend_from_slice(owner);
        self.out.extend_from_slice(rest);
        self.count += 1;
    }
}

/// Answers `query` into `out` (cleared first). Returns false when the
/// packet gets no answer at all (too short to have a header, or itself a
/// response).
pub fn answer(zone: &Zone, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
    out.clear();
    if query.len() < HEADER || query[2] & 0x80 != 0 {
        return false;
    }
    let opcode = (query[2] >> 3) & 0x0F;
    let qdcount = u16_at(query, 4).unwrap_or(0);
    let (an, ns, ar) = (
        u16_at(query, 6).unwrap_or(0),
        u16_at(query, 8).unwrap_or(0),
        u16_at(query, 10).unwrap_or(0),
    );
    if opcode != 0 {
        bare(out, query, None, rcode::NOTIMP, false, 0);
        return true;
    }
    let mut key = [0u8; 255];
    let parsed = (qdcount == 1)
        .then(|| read_qname(query, &mut key))
        .flatten()
        .filter(|(_, end)| query.len() >= end + 4);
    let Some((key_len, name_end)) = parsed else {
        bare(out, query, None, rcode::FORMERR, false, 0);
        return true;
    };
    let q_end = name_end + 4;
    let qtype = u16_at(query, name_end).unwrap_or(0);
    let qclass = u16_at(query, name_end + 2).unwrap_or(0);
    let edns = match (an, ns) {
        (0, 0) => read_additional(query, q_end, ar),
        _ => Err(()),
    };
    let Ok(edns) = edns else {
        bare(out, query, Some(q_end), rcode::FORMERR, false, 0);
        return true;
    };
    let has_opt = edns.is_some();
    if let Some(Edns { version: 1.., .. }) = edns {
        bare(out, query, Some(q_end), rcode::NOERROR, true, rcode::BADVERS_EXT);
        return true;
    }
    if qtype == OPT {
        bare(out, query, Some(q_end), rcode::FORMERR, has_opt, 0);
        return true;
    }
    if matches!(qtype, qtype::AXFR | qtype::IXFR | qtype::MAILA | qtype::MAILB) {
        bare(out, query, Some(q_end), rcode::NOTIMP, has_opt, 0);
        return true;
    }
    if qclass != 1 && qclass != 255 {
        bare(out, query, Some(q_end), rcode::REFUSED, has_opt, 0);
        return true;
    }
    let limit = match (transport, &edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => PLAIN_UDP,
        (Transport::Udp, Some(e)) => (e.payload as usize).clamp(PLAIN_UDP, MAX_UDP),
    };
    // Room kept for the OPT record at the end.
    let limit = limit - if has_opt { OPT_LEN } else { 0 };
    let qname = &key[..key_len];

    header(out, query, true, rcode::NOERROR);
    out.extend_from_slice(&query[HEADER..q_end]);
    set_count(out, 0, 1);
    let mut answers = Section {
        out,
        limit,
        count: 0,
        full: false,
    };
    let rcode = match zone.get(qname) {
        Some(node) => {
            let cname = node.cname().filter(|_| qtype != rtype::CNAME && qtype != qtype::ANY);
            match cname {
                None => {
                    for r in node.records.iter().filter(|r| qtype == qtype::ANY || r.rtype == qtype) {
                        answers.at_qname(r);
                    }
                }
                Some(c) => {
                    answers.at_qname(c);
                    follow(zone, c, qtype, &mut answers);
                }
            }
            rcode::NOERROR
        }
        None if zone.exists(qname) => rcode::NOERROR,
        None => rcode::NXDOMAIN,
    };
    let (count, full) = (answers.count, answers.full);
    if full {
        // Over TCP this only happens past 65,535 bytes: the client gets TC
        // there too, and no partial set.
        out.truncate(q_end);
        out[2] |= 0x02;
    } else {
        set_count(out, 1, count);
        if count == 0 {
            negative(zone, qname, out, limit);
        }
    }
    out[3] = (out[3] & 0xF0) | rcode;
    if has_opt {
        push_opt(out, 0);
        set_count(out, 3, 1);
    }
    true
}

/// Follows a CNAME through our records: the target's records of `qtype`,
/// or its own CNAME, and so on.
fn follow(zone: &Zone, first: &Stored, qtype: u16, answers: &mut Section<'_>) {
    let mut link = first;
    for _ in 0..MAX_CHAIN {
        let Some(node) = link.target.as_deref().and_then(|t| zone.get(t)) else {
            return;
        };
        if let Some(c) = node.cname() {
            answers.whole(c);
            link = c;
            continue;
        }
        for r in node.records.iter().filter(|r| r.rtype == qtype) {
            answers.whole(r);
        }
        return;
    }
}

/// For NXDOMAIN and NODATA: the SOA of the closest enclosing name that has
/// one, into the authority section, with the negative-caching TTL.
fn negative(zone: &Zone, qname: &[u8], out: &mut Vec<u8>, limit: usize) {
    let mut at = 0;
    loop {
        let name = &qname[at..];
        if let Some(soa) = zone
            .get(name)
            .and_then(|n| n.records.iter().find(|r| r.rtype == rtype::SOA))
        {
            if out.len() + soa.wire.len() <= limit {
                let start = out.len();
                out.extend_from_slice(&soa.wire);
                // SOA MINIMUM is the data's last 4 bytes; TTL at owner + 4.
                let w = &soa.wire;
                let min = u32::from_be_bytes([w[w.len() - 4], w[w.len() - 3], w[w.len() - 2], w[w.len() - 1]]);
                let ttl_at = start + soa.owner_len + 4;
                let ttl = u32::from_be_bytes([out[ttl_at], out[ttl_at + 1], out[ttl_at + 2], out[ttl_at + 3]]);
                out[ttl_at..ttl_at + 4].copy_from_slice(&ttl.min(min).to_be_bytes());
                set_count(out, 2, 1);
            }
            return;
        }
        let len = qname[at] as usize;
        if len == 0 {
            return;
        }
        at += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{DNSClass, Name, RecordType};

    use super::super::zone::{Zone, parse};
    use super::*;

    fn zone(records: &[&str]) -> Zone {
        Zone::from_records(records.iter().map(|r| parse(r).unwrap()).collect()).unwrap()
    }

    fn query(name: &str, ty: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.edns = Some(e);
        }
        m.to_vec().unwrap()
    }

    fn ask(z: &Zone, q: &[u8], t: Transport) -> Message {
        let mut out = Vec::new();
        assert!(answer(z, q, t, &mut out), "no answer");
        Message::from_vec(&out).unwrap_or_else(|e| panic!("unparsable answer {out:?}: {e}"))
    }

    fn texts(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.to_string()).collect()
    }

    const SEED: &[&str] = &[
        "miek.nl. 3600 IN MX 10 mx.miek.nl.",
        "miek.nl. 3600 IN MX 20 mx2.miek.nl.",
        "miek.nl. 3600 IN A 192.0.2.7",
        "miek.nl. 3600 IN SOA ns.miek.nl. hostmaster.miek.nl. 1 7200 3600 1209600 300",
        "www.miek.nl. 60 IN CNAME miek.nl.",
        "a.b.miek.nl. 60 IN TXT \"deep\"",
    ];

    #[test]
    fn every_record_of_the_name_and_type() {
        let z = zone(SEED);
        let m = ask(&z, &query("miek.nl.", RecordType::MX, None), Transport::Udp);
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired && !m.metadata.truncation);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(
            texts(&m),
            [
                "miek.nl. 3600 IN MX 10 mx.miek.nl.",
                "miek.nl. 3600 IN MX 20 mx2.miek.nl."
            ]
        );
        let m = ask(&z, &query("MIEK.nl.", RecordType::A, None), Transport::Udp);
        assert_eq!(texts(&m), ["MIEK.nl. 3600 IN A 192.0.2.7"], "the asker's case is kept");
        let m = ask(&z, &query("miek.nl.", RecordType::ANY, None), Transport::Tcp);
        assert_eq!(m.answers.len(), 4);
    }

    #[test]
    fn cname_leads_on() {
        let z = zone(SEED);
        let m = ask(&z, &query("www.miek.nl.", RecordType::A, None), Transport::Udp);
        assert_eq!(
            texts(&m),
            ["www.miek.nl. 60 IN CNAME miek.nl.", "miek.nl. 3600 IN A 192.0.2.7"]
        );
        let m = ask(&z, &query("www.miek.nl.", RecordType::CNAME, None), Transport::Udp);
        assert_eq!(texts(&m), ["www.miek.nl. 60 IN CNAME miek.nl."]);
        // A loop ends after MAX_CHAIN links.
        let z = zone(&["a.x. CNAME b.x.", "b.x. CNAME a.x."]);
        let m = ask(&z, &query("a.x.", RecordType::A, None), Transport::Udp);
        assert_eq!(m.answers.len(), 1 + MAX_CHAIN);
    }

    #[test]
    fn nodata_and_nxdomain_carry_the_soa() {
        let z = zone(SEED);
        let m = ask(&z, &query("miek.nl.", RecordType::AAAA, None), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty() && m.metadata.authoritative);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].ttl, 300, "the SOA's minimum bounds its TTL");
        // An empty non-terminal exists: NODATA, not NXDOMAIN.
        let m = ask(&z, &query("b.miek.nl.", RecordType::A, None), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let m = ask(&z, &query("nope.miek.nl.", RecordType::A, None), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        let m = ask(&z, &query("other.org.", RecordType::A, None), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.authorities.is_empty());
    }

    #[test]
    fn truncated_over_udp_whole_over_tcp() {
        let recs: Vec<String> = (0..60).map(|i| format!("big.example. AAAA 2001:db8::{i:x}")).collect();
        let z = Zone::from_records(recs.iter().map(|r| parse(r).unwrap()).collect()).unwrap();
        for edns in [None, Some(1232), Some(4096)] {
            let m = ask(&z, &query("big.example.", RecordType::AAAA, edns), Transport::Udp);
            assert!(m.metadata.truncation, "{edns:?}");
            assert!(m.answers.is_empty());
            assert_eq!(m.edns.is_some(), edns.is_some());
        }
        let m = ask(&z, &query("big.example.", RecordType::AAAA, Some(1232)), Transport::Tcp);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), MAX_UDP as u16);
        // 20 fit in 1232 bytes, not in 512.
        let z = Zone::from_records(recs[..20].iter().map(|r| parse(r).unwrap()).collect()).unwrap();
        assert!(
            ask(&z, &query("big.example.", RecordType::AAAA, None), Transport::Udp)
                .metadata
                .truncation
        );
        let m = ask(&z, &query("big.example.", RecordType::AAAA, Some(1232)), Transport::Udp);
        assert_eq!(m.answers.len(), 20);
    }

    #[test]
    fn what_it_does_not_do() {
        let z = zone(SEED);
        let mut q = Message::query();
        q.metadata.op_code = OpCode::Update;
        q.add_query(Query::query(Name::from_ascii("miek.nl.").unwrap(), RecordType::A));
        assert_eq!(
            ask(&z, &q.to_vec().unwrap(), Transport::Udp).metadata.response_code,
            ResponseCode::NotImp
        );
        let m = ask(&z, &query("miek.nl.", RecordType::AXFR, None), Transport::Tcp);
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        let mut m = Message::query();
        m.add_query(q);
        assert_eq!(
            ask(&z, &m.to_vec().unwrap(), Transport::Udp).metadata.response_code,
            ResponseCode::Refused
        );
        let mut e = Edns::new();
        e.set_version(1);
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii("miek.nl.").unwrap(), RecordType::A));
        m.edns = Some(e);
        let r = ask(&z, &m.to_vec().unwrap(), Transport::Udp);
        // 16 is BADVERS with an OPT (hickory names it BADSIG, TSIG's 16).
        assert_eq!(u16::from(r.metadata.response_code), 16);
        assert!(r.edns.is_some());
        // No question, two questions: FORMERR.
        let m = Message::query();
        assert_eq!(
            ask(&z, &m.to_vec().unwrap(), Transport::Udp).metadata.response_code,
            ResponseCode::FormErr
        );
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        m.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        assert_eq!(
            ask(&z, &m.to_vec().unwrap(), Transport::Udp).metadata.response_code,
            ResponseCode::FormErr
        );
    }

    #[test]
    fn garbage_is_dropped_or_formerr_never_a_panic() {
        let z = zone(SEED);
        let mut out = Vec::new();
        assert!(!answer(&z, b"short", Transport::Udp, &mut out));
        let good = query("miek.nl.", RecordType::MX, Some(1232));
        let mut resp = good.clone();
        resp[2] |= 0x80;
        assert!(
            !answer(&z, &resp, Transport::Udp, &mut out),
            "responses are not answered"
        );
        // Every prefix and many bit flips of a good query: an answer that
        // parses, or none.
        for cut in 0..good.len() {
            if answer(&z, &good[..cut], Transport::Udp, &mut out) {
                Message::from_vec(&out).unwrap();
            }
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut q = good.clone();
            for k in 0..3 {
                let at = (seed >> (k * 16)) as usize % q.len();
                q[at] ^= 1 << ((seed >> (k * 5 + 48)) % 8);
            }
            if answer(&z, &q, Transport::Udp, &mut out) {
                assert!(out.len() <= MAX_UDP);
                Message::from_vec(&out).unwrap_or_else(|e| panic!("{q:?} -> {out:?}: {e}"));
            }
        }
    }
}
