//! A document held as its bytes, already validated, whose tree is built only when something
//! asks for it. A chat request on the passthrough path goes upstream as the client's bytes
//! with a few members rewritten: building the whole tree (and dropping it) cost about a tenth
//! of such a request, for members nobody read.

use std::cell::OnceCell;

use serde_json::Value;

use super::TopMembers;

/// The bytes of a JSON document that parsed (or was checked by the same parser), and its tree
/// on first use. Cheap to copy: it borrows both.
#[derive(Clone, Copy)]
pub struct LazyDoc<'a> {
    bytes: &'a [u8],
    tree: &'a OnceCell<Value>,
    max_depth: usize,
    /// Where its top-level members are, when the check noted it.
    members: Option<&'a TopMembers>,
}

/// What [`LazyDoc::tree`] answers if the bytes do not parse after all (they were checked by the
/// same parser, so only a bug gets here).
static NULL: Value = Value::Null;

impl<'a> LazyDoc<'a> {
    /// `bytes` must be a document that `super::parse(bytes, max_depth)` accepts; `tree` holds
    /// its tree once built (it may be given already filled).
    pub fn new(bytes: &'a [u8], tree: &'a OnceCell<Value>, max_depth: usize) -> Self {
        Self {
            bytes,
            tree,
            max_depth,
            members: None,
        }
    }

    /// With the layout of its top-level members, noted from these very bytes.
    pub fn with_members(self, members: Option<&'a TopMembers>) -> Self {
        Self { members, ..self }
    }

    /// Calls `f(quoted name, raw value)` for each top-level member, first to last, while it
    /// returns true; true when the whole object was visited. From the noted layout when there
    /// is one, else by walking the bytes ([`super::members::for_each_quoted_member`]).
    pub fn for_each_member(&self, f: impl FnMut(&'a [u8], &'a [u8]) -> bool) -> bool {
        super::members::for_each_top_member(self.bytes, self.members, f)
    }

    /// Where its top-level members are, when the check noted it.
    pub fn members(&self) -> Option<&'a TopMembers> {
        self.members
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The tree, parsed now if it has not been.
    pub fn tree(&self) -> &'a Value {
        if let Some(v) = self.tree.get() {
            return v;
        }
        match super::parse(self.bytes, self.max_depth) {
            Ok(v) => self.tree.get_or_init(|| v),
            Err(e) => {
                tracing::error!(error = %e, "a checked JSON document failed to parse");
                &NULL
            }
        }
    }

    /// Whether the tree has been built (by [`LazyDoc::tree`] or given).
    pub fn is_parsed(&self) -> bool {
        self.tree.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_once_on_first_use() {
        let cell = OnceCell::new();
        let doc = LazyDoc::new(br#"{"a":[1,2]}"#, &cell, 8);
        assert!(!doc.is_parsed());
        assert_eq!(doc.tree()["a"][1], 2);
        assert!(doc.is_parsed());
        assert!(std::ptr::eq(doc.tree(), cell.get().unwrap()));
    }

    #[test]
    fn a_given_tree_is_used_as_is() {
        let cell = OnceCell::from(serde_json::json!({"b": true}));
        let doc = LazyDoc::new(b"{}", &cell, 8);
        assert_eq!(doc.tree()["b"], true);
    }
}
