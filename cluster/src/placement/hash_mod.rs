//! Hash mod N: position `x` goes to slot `x mod S` of a slot list, each node holding
//! `max(1, round(weight))` consecutive slots in join order.
//!
//! This is the baseline the other strategies are measured against: it balances as well as
//! the hash spreads, but any change of S (a join, a leave, a reweight) re-deals almost
//! every position: going from S to S+1 slots keeps a position only when `x mod S == x mod
//! (S+1)`, about 1/(S+1) of them, so ≈ S/(S+1) of the keys move. Weights are rounded to
//! whole slots. It owns nothing but this formula and its slot list.

use crate::error::Result;
use crate::node::{Members, NodeSpec};

use super::Placement;

/// `position mod S` over a slot list.
#[derive(Debug, Clone, Default)]
pub struct HashMod {
    members: Members,
    /// Node index of each slot.
    slots: Vec<u32>,
}

fn slot_count(weight: f64) -> usize {
    (weight.round() as usize).max(1)
}

impl HashMod {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of slots, S.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

impl Placement for HashMod {
    fn strategy(&self) -> &'static str {
        "hash_mod"
    }

    fn vnodes(&self) -> Option<usize> {
        None
    }

    fn members(&self) -> &Members {
        &self.members
    }

    fn join(&mut self, node: NodeSpec) -> Result<()> {
        let count = slot_count(node.weight);
        let index = self.members.add(node)? as u32;
        self.slots.extend(std::iter::repeat_n(index, count));
        Ok(())
    }

    fn leave(&mut self, node: &str) -> Result<()> {
        let index = self.members.require(node)?;
        let (_, renumbered) = self.members.swap_remove(index);
        self.slots.retain(|&s| s as usize != index);
        if let Some((old, new)) = renumbered {
            for s in &mut self.slots {
                if *s as usize == old {
                    *s = new as u32;
                }
            }
        }
        Ok(())
    }

    fn reweight(&mut self, node: &str, weight: f64) -> Result<()> {
        let index = self.members.require(node)?;
        self.members.set_weight(index, weight)?;
        let want = slot_count(weight);
        let have = self.slots.iter().filter(|&&s| s as usize == index).count();
        if want > have {
            // Grow the node's block in place, after its last slot.
            let at = self
                .slots
                .iter()
                .rposition(|&s| s as usize == index)
                .map_or(self.slots.len(), |p| p + 1);
            let extra = std::iter::repeat_n(index as u32, want - have);
            self.slots.splice(at..at, extra);
        } else {
            let mut drop = have - want;
            let mut i = self.slots.len();
            while drop > 0 && i > 0 {
                i -= 1;
                if self.slots[i] as usize == index {
                    self.slots.remove(i);
                    drop -= 1;
                }
            }
        }
        Ok(())
    }

    fn owner_index(&self, position: u64) -> Option<usize> {
        let s = self.slots.len() as u64;
        (s > 0).then(|| self.slots[(position % s) as usize] as usize)
    }

    fn walk(&self, position: u64) -> Box<dyn Iterator<Item = usize> + '_> {
        let s = self.slots.len();
        let start = if s == 0 {
            0
        } else {
            (position % s as u64) as usize
        };
        Box::new((0..s).map(move |j| self.slots[(start + j) % s] as usize))
    }
}
