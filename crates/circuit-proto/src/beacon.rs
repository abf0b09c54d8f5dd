//! Discovery datagrams. A client (or, with membership, a server) sends a
//! `Query` to the multicast group; servers answer with their URL. With a key,
//! every datagram is sealed with XChaCha20-Poly1305 under a key derived from
//! the cluster key, so strangers can neither read nor forge them.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::secure::Key;

/// The default multicast group and port.
pub const DEFAULT_GROUP: &str = "228.8.8.8:8822";
const MAGIC: &[u8; 4] = b"CRC1";
/// Largest datagram we send or accept.
pub const MAX_DATAGRAM: usize = 1400;

/// A discovery message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Beacon {
    /// "Who is there?" The nonce ties answers to this query.
    Query { nonce: u64 },
    /// "Here I am": a server's URL.
    Announce { nonce: u64, url: String },
}

/// Frames `body` as a datagram of kind `magic`, sealed under the key's
/// `purpose` subkey when a key is given.
pub fn seal_bytes(magic: &[u8; 4], purpose: &str, body: &[u8], key: Option<&Key>) -> Vec<u8> {
    let mut out = magic.to_vec();
    match key {
        None => {
            out.push(0);
            out.extend_from_slice(body);
        }
        Some(k) => {
            out.push(1);
            let mut nonce = [0u8; 24];
            getrandom::fill(&mut nonce).expect("OS random source");
            let aead = XChaCha20Poly1305::new(&k.derive(purpose).into());
            let ct = aead.encrypt(XNonce::from_slice(&nonce), body).expect("seal");
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&ct);
        }
    }
    out
}

/// Opens a datagram of kind `magic`; `None` for anything not ours, not
/// sealed with our key, or sealed when we expect plain (never panics).
pub fn open_bytes(magic: &[u8; 4], purpose: &str, buf: &[u8], key: Option<&Key>) -> Option<Vec<u8>> {
    let rest = buf.strip_prefix(magic)?;
    let (&flag, rest) = rest.split_first()?;
    match (flag, key) {
        (0, None) => Some(rest.to_vec()),
        (1, Some(k)) if rest.len() > 24 => {
            let (nonce, ct) = rest.split_at(24);
            let aead = XChaCha20Poly1305::new(&k.derive(purpose).into());
            aead.decrypt(XNonce::from_slice(nonce), ct).ok()
        }
        _ => None,
    }
}

/// Why a datagram did not open, in terms an operator can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unopened {
    /// Of the same kind but another version of its wire format (the magic's
    /// first three bytes agree, the fourth does not): `theirs` is its magic.
    OtherVersion {
        /// The datagram's magic, e.g. `CRM1`.
        theirs: [u8; 4],
    },
    /// Sealed with a key, and we have none.
    Sealed,
    /// Not sealed, and we have a key.
    Unsealed,
    /// Sealed, but not with our key, or corrupted on the way.
    OtherKey,
    /// Not a datagram of this kind at all.
    Foreign,
}

/// Why [`open_bytes`] refused `buf`. Only for datagrams it refused: it
/// does not decrypt, so a sealed datagram is taken to be under another key.
pub fn why_unopened(magic: &[u8; 4], buf: &[u8], key: Option<&Key>) -> Unopened {
    let Some((head, rest)) = buf.split_first_chunk::<4>() else {
        return Unopened::Foreign;
    };
    if head != magic {
        return match head[..3] == magic[..3] && head[3].is_ascii_digit() {
            true => Unopened::OtherVersion { theirs: *head },
            false => Unopened::Foreign,
        };
    }
    match (rest.first(), key) {
        (Some(1), None) => Unopened::Sealed,
        (Some(0), Some(_)) => Unopened::Unsealed,
        (Some(1), Some(_)) => Unopened::OtherKey,
        _ => Unopened::Foreign,
    }
}

/// Encodes a beacon, sealed when a key is given.
pub fn seal(b: &Beacon, key: Option<&Key>) -> Vec<u8> {
    let body = postcard::to_allocvec(b).expect("beacon encodes");
    seal_bytes(MAGIC, "discovery", &body, key)
}

/// Decodes a beacon; `None` for anything not ours or not sealed with our key.
pub fn open(buf: &[u8], key: Option<&Key>) -> Option<Beacon> {
    postcard::from_bytes(&open_bytes(MAGIC, "discovery", buf, key)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_datagram_says_why() {
        let k = Key::from_base64(&Key::generate(), "t").unwrap();
        let other = Key::from_base64(&Key::generate(), "t").unwrap();
        let m = b"CRM2";
        let why = |buf: &[u8], key| {
            assert_eq!(open_bytes(m, "p", buf, key), None, "{buf:?} opens");
            why_unopened(m, buf, key)
        };
        assert_eq!(why(&seal_bytes(m, "p", b"x", Some(&k)), None), Unopened::Sealed);
        assert_eq!(why(&seal_bytes(m, "p", b"x", None), Some(&k)), Unopened::Unsealed);
        assert_eq!(
            why(&seal_bytes(m, "p", b"x", Some(&other)), Some(&k)),
            Unopened::OtherKey
        );
        let old = seal_bytes(b"CRM1", "p", b"x", None);
        assert_eq!(why(&old, None), Unopened::OtherVersion { theirs: *b"CRM1" });
        for foreign in [&b""[..], b"CRM", b"CRM2", b"CRM2\x07", b"CRMx\x00", b"GET / HTTP/1.1"] {
            assert_eq!(why(foreign, None), Unopened::Foreign, "{foreign:?}");
        }
    }

    #[test]
    fn sealed_only_opens_with_the_key() {
        let k = Key::from_base64(&Key::generate(), "t").unwrap();
        let other = Key::from_base64(&Key::generate(), "t").unwrap();
        let b = Beacon::Announce {
            nonce: 9,
            url: "circuit://1.2.3.4:5/6/X0000000000000001".into(),
        };
        assert_eq!(open(&seal(&b, Some(&k)), Some(&k)), Some(b.clone()));
        assert_eq!(open(&seal(&b, Some(&k)), Some(&other)), None);
        assert_eq!(open(&seal(&b, Some(&k)), None), None);
        assert_eq!(open(&seal(&b, None), Some(&k)), None);
        assert_eq!(open(&seal(&b, None), None), Some(b));
        assert_eq!(open(b"CRC1", None), None);
        assert_eq!(open(&[], None), None);
    }
}
