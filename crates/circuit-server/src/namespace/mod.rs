//! This server's anchor tree. Anchors appear when an element is made below
//! them and vanish once they hold no element and no children.
//!
//! Nothing here recurses (walks, listing, drop): paths from the wire are
//! bounded (`circuit_proto::path::MAX_DEPTH`), but a tree walk must not
//! depend on it to keep a runtime thread's stack safe.

use std::collections::BTreeMap;

use circuit_proto::ElementKind;

use crate::elements::Element;
use crate::events::Bus;

#[derive(Default)]
struct Node {
    element: Option<Element>,
    children: BTreeMap<String, Node>,
}

impl Drop for Node {
    /// Frees the subtree with a loop: the derived drop would recurse once per level.
    fn drop(&mut self) {
        let mut stack: Vec<Node> = std::mem::take(&mut self.children).into_values().collect();
        while let Some(mut n) = stack.pop() {
            stack.extend(std::mem::take(&mut n.children).into_values());
        }
    }
}

/// One anchor of a listing: names below the server, and the kind of its
/// element ("" for an empty anchor).
pub type Listed = (Vec<String>, Option<ElementKind>);

/// The anchor tree below one server's root. The root holds the server element.
#[derive(Default)]
pub struct Namespace {
    root: Node,
    count: usize,
    /// Where `created` and `scrubbed` events go, once observed.
    bus: Option<Bus>,
}

/// The anchor already holds an element.
#[derive(Debug)]
pub struct Occupied(pub ElementKind);

impl Namespace {
    fn node(&self, names: &[String]) -> Option<&Node> {
        names.iter().try_fold(&self.root, |n, name| n.children.get(name))
    }

    /// The element at `names`, if any.
    pub fn get(&self, names: &[String]) -> Option<Element> {
        self.node(names).and_then(|n| n.element.clone())
    }

    /// Places `el` at `names`, creating the anchors on the way.
    pub fn insert(&mut self, names: &[String], el: Element) -> Result<(), Occupied> {
        let mut node = &mut self.root;
        for name in names {
            node = node.children.entry(name.clone()).or_default();
        }
        if let Some(old) = &node.element {
            return Err(Occupied(old.kind()));
        }
        if let (Some(bus), false) = (&self.bus, names.is_empty()) {
            bus.emit_below(
                names,
                circuit_proto::EventKind::Created {
                    kind: el.kind().to_string(),
                },
            );
        }
        node.element = Some(el);
        self.count += 1;
        Ok(())
    }

    fn node_mut(&mut self, names: &[String]) -> Option<&mut Node> {
        names
            .iter()
            .try_fold(&mut self.root, |n, name| n.children.get_mut(name))
    }

    /// Takes the element at `names` out, pruning anchors left empty.
    pub fn remove(&mut self, names: &[String]) -> Option<Element> {
        let el = self.node_mut(names)?.element.take();
        // Prune: the topmost anchor from which down to `names` each anchor
        // holds nothing but the next one goes, with all below it.
        let mut cut = None;
        let mut node = &self.root;
        for (depth, name) in names.iter().enumerate() {
            node = &node.children[name];
            let only_the_way_down = node.element.is_none()
                && match names.get(depth + 1) {
                    Some(next) => node.children.len() == 1 && node.children.contains_key(next),
                    None => node.children.is_empty(),
                };
            match (only_the_way_down, cut) {
                (true, None) => cut = Some(depth),
                (false, _) => cut = None,
                (true, Some(_)) => {}
            }
        }
        if let Some(depth) = cut {
            let parent = self.node_mut(&names[..depth]).expect("the anchor was just walked");
            parent.children.remove(&names[depth]);
        }
        if let Some(el) = &el {
            self.count -= 1;
            if let Some(bus) = &self.bus {
                bus.emit_below(
                    names,
                    circuit_proto::EventKind::Scrubbed {
                        kind: el.kind().to_string(),
                    },
                );
            }
        }
        el
    }

    /// Children of `names` in name order; with `recursive`, all descendants
    /// in pre-order. `None` if the anchor does not exist.
    /// Each entry's names are built once: the cost is the size of the answer.
    pub fn list(&self, names: &[String], recursive: bool) -> Vec<Listed> {
        let mut out = Vec::new();
        let Some(node) = self.node(names) else { return out };
        let mut prefix = names.to_vec();
        // One iterator per level being walked; `prefix` holds their names.
        let mut levels = vec![node.children.iter()];
        while let Some(level) = levels.last_mut() {
            let Some((name, child)) = level.next() else {
                levels.pop();
                prefix.pop();
                continue;
            };
            prefix.push(name.clone());
            out.push((prefix.clone(), child.element.as_ref().map(|e| e.kind())));
            if recursive {
                levels.push(child.children.iter());
            } else {
                prefix.pop();
            }
        }
        out
    }

    /// Reports every element placed or removed below the root from now on
    /// as a `created` or `scrubbed` event on `bus`.
    pub fn observe(&mut self, bus: Bus) {
        self.bus = Some(bus);
    }

    /// Number of elements held, the server element included.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no element is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Takes every element out (at shutdown).
    pub fn drain(&mut self) -> Vec<Element> {
        let mut out: Vec<Element> = self.root.element.take().into_iter().collect();
        let mut stack: Vec<Node> = std::mem::take(&mut self.root.children).into_values().collect();
        while let Some(mut n) = stack.pop() {
            out.extend(n.element.take());
            stack.extend(std::mem::take(&mut n.children).into_values());
        }
        self.count = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.split('/').filter(|n| !n.is_empty()).map(String::from).collect()
    }

    #[test]
    fn anchors_come_and_go() {
        let mut ns = Namespace::default();
        ns.insert(&[], Element::Server).unwrap();
        ns.insert(&names("this/is/charlie"), Element::Server).unwrap();
        ns.insert(&names("this/x"), Element::Server).unwrap();
        assert!(ns.insert(&names("this/x"), Element::Server).is_err());
        assert_eq!(ns.len(), 3);
        let all: Vec<_> = ns.list(&[], true).into_iter().map(|(n, k)| (n.join("/"), k)).collect();
        assert_eq!(
            all,
            [
                ("this".into(), None),
                ("this/is".into(), None),
                ("this/is/charlie".into(), Some(ElementKind::Server)),
                ("this/x".into(), Some(ElementKind::Server))
            ]
        );
        assert_eq!(ns.list(&names("this"), false).len(), 2);
        assert!(ns.remove(&names("this/is/charlie")).is_some());
        assert!(ns.remove(&names("this/is/charlie")).is_none());
        let all: Vec<_> = ns.list(&[], true).into_iter().map(|(n, _)| n.join("/")).collect();
        assert_eq!(all, ["this", "this/x"]);
        ns.remove(&names("this/x"));
        assert!(ns.list(&[], true).is_empty());
        assert_eq!(ns.len(), 1);
        assert!(ns.get(&[]).is_some());
    }

    #[test]
    fn prunes_only_what_is_left_empty() {
        let mut ns = Namespace::default();
        ns.insert(&names("a/b"), Element::Server).unwrap();
        ns.insert(&names("a/b/c/d"), Element::Server).unwrap();
        ns.insert(&names("a/x/y"), Element::Server).unwrap();
        let all =
            |ns: &Namespace| -> Vec<String> { ns.list(&[], true).into_iter().map(|(n, _)| n.join("/")).collect() };
        assert!(
            ns.remove(&names("a/b/c")).is_none(),
            "an empty anchor holds nothing to remove"
        );
        assert_eq!(ns.list(&names("a/b/c"), false).len(), 1);
        assert!(ns.remove(&names("a/b/c/d")).is_some());
        assert_eq!(all(&ns), ["a", "a/b", "a/x", "a/x/y"]);
        assert!(ns.remove(&names("a/b")).is_some());
        assert_eq!(all(&ns), ["a", "a/x", "a/x/y"]);
        ns.insert(&names("a"), Element::Server).unwrap();
        assert!(ns.remove(&names("a/x/y")).is_some());
        assert_eq!(all(&ns), ["a"]);
        assert!(ns.remove(&names("a")).is_some());
        assert!(all(&ns).is_empty());
        assert_eq!(ns.len(), 0);
    }

    /// Far deeper than a path may be: every walk is a loop, not a recursion,
    /// so nothing here can overflow a thread's stack (the test thread's is 2 MiB).
    #[test]
    fn deep_trees_never_recurse() {
        let deep: Vec<String> = vec!["a".to_string(); 200_000];
        let mut ns = Namespace::default();
        ns.insert(&deep, Element::Server).unwrap();
        ns.insert(&deep[..100_000], Element::Server).unwrap();
        assert!(ns.get(&deep).is_some());
        assert_eq!(ns.list(&deep[..199_999], false).len(), 1);
        // Listing a deep chain costs the size of the answer, not its cube.
        let chain: Vec<String> = vec!["b".to_string(); 2_000];
        ns.insert(&chain, Element::Server).unwrap();
        let listed = ns.list(&names("b"), true);
        assert_eq!(listed.len(), 1_999);
        assert_eq!(
            (listed[1_998].0.len(), listed[1_998].1),
            (2_000, Some(ElementKind::Server))
        );
        assert!(ns.remove(&deep).is_some());
        assert!(ns.get(&deep[..100_000]).is_some());
        assert!(ns.remove(&deep[..100_000]).is_some());
        assert_eq!(ns.list(&[], false).len(), 1, "the whole a-chain is pruned");
        ns.insert(&deep, Element::Server).unwrap();
        assert_eq!(ns.drain().len(), 2);
        ns.insert(&deep, Element::Server).unwrap();
        drop(ns);
    }

    #[tokio::test]
    async fn reports_elements_placed_and_removed() {
        use circuit_proto::EventKind;
        let bus = crate::events::Bus::new(circuit_proto::ServerId(1));
        let mut rx = bus.subscribe();
        let mut ns = Namespace::default();
        ns.insert(&[], Element::Server).unwrap();
        ns.observe(bus);
        ns.insert(&names("a/b"), Element::Server).unwrap();
        assert!(ns.insert(&names("a/b"), Element::Server).is_err());
        assert!(ns.remove(&names("a/c")).is_none());
        ns.remove(&names("a/b"));
        let e = rx.try_recv().unwrap();
        assert_eq!(e.path.to_string(), "/X0000000000000001/a/b");
        assert_eq!(e.kind, EventKind::Created { kind: "server".into() });
        let e = rx.try_recv().unwrap();
        assert_eq!(e.kind, EventKind::Scrubbed { kind: "server".into() });
        // A refused insert and a remove of nothing report nothing.
        assert!(rx.try_recv().is_err());
    }
}
