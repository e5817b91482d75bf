//! Request ids: `<process prefix><shard><counter>` in hex, unique per process run and cheap to
//! make (no syscall, no lock).

use std::cell::Cell;

pub struct RequestIds {
    prefix: String,
    counter: Cell<u64>,
}

impl RequestIds {
    pub fn new(shard: usize) -> Self {
        let seed = fastrand::u32(..);
        Self {
            prefix: format!("{seed:08x}{shard:02x}"),
            counter: Cell::new(0),
        }
    }

    pub fn next(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        let mut id = String::with_capacity(self.prefix.len() + 10);
        id.push_str(&self.prefix);
        for shift in (0..10).rev() {
            id.push(HEX[((n >> (shift * 4)) & 0xf) as usize] as char);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_valid() {
        let ids = super::RequestIds::new(3);
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert!(crate::http1::valid_request_id(&a));
    }
}
