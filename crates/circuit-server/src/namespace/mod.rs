//! This server's anchor tree. Anchors appear when an element is made below
//! them and vanish once they hold no element and no children.

use std::collections::BTreeMap;

use circuit_proto::ElementKind;

use crate::elements::Element;
use crate::events::Bus;

#[derive(Default)]
struct Node {
    element: Option<Element>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.element.is_none() && self.children.is_empty()
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

    /// Takes the element at `names` out, pruning anchors left empty.
    pub fn remove(&mut self, names: &[String]) -> Option<Element> {
        fn walk(node: &mut Node, names: &[String]) -> Option<Element> {
            let Some((first, rest)) = names.split_first() else {
                return node.element.take();
            };
            let child = node.children.get_mut(first)?;
            let el = walk(child, rest);
            if child.is_empty() {
                node.children.remove(first);
            }
            el
        }
        let el = walk(&mut self.root, names);
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
    pub fn list(&self, names: &[String], recursive: bool) -> Vec<Listed> {
        fn walk(node: &Node, prefix: &mut Vec<String>, recursive: bool, out: &mut Vec<Listed>) {
            for (name, child) in &node.children {
                prefix.push(name.clone());
                out.push((prefix.clone(), child.element.as_ref().map(|e| e.kind())));
                if recursive {
                    walk(child, prefix, recursive, out);
                }
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        if let Some(node) = self.node(names) {
            walk(node, &mut names.to_vec(), recursive, &mut out);
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
        fn walk(node: &mut Node, out: &mut Vec<Element>) {
            out.extend(node.element.take());
            for child in node.children.values_mut() {
                walk(child, out);
            }
            node.children.clear();
        }
        let mut out = Vec::new();
        walk(&mut self.root, &mut out);
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
