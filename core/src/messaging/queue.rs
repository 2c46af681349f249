//! A bounded priority queue for outbound messages waiting for a free slot:
//! higher priority first, first-in first-out within one priority.

use std::collections::BinaryHeap;

/// Returned when the queue is at capacity.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull<T>(pub T);

#[derive(Debug)]
struct Slot<T> {
    priority: u8,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Slot<T> {
    fn eq(&self, other: &Self) -> bool {
        self.priority == other.priority && self.seq == other.seq
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Max-heap: higher priority wins, then the lower sequence number.
        self.priority.cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The queue.
#[derive(Debug)]
pub struct PriorityQueue<T> {
    heap: BinaryHeap<Slot<T>>,
    next_seq: u64,
    capacity: usize,
}

impl<T> PriorityQueue<T> {
    /// An empty queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Self { heap: BinaryHeap::new(), next_seq: 0, capacity }
    }

    /// Adds an item, or gives it back when the queue is full.
    pub fn push(&mut self, priority: u8, item: T) -> Result<(), QueueFull<T>> {
        if self.heap.len() >= self.capacity {
            return Err(QueueFull(item));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Slot { priority, seq, item });
        Ok(())
    }

    /// Takes the highest-priority, oldest item.
    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|slot| slot.item)
    }

    /// Number of waiting items.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn higher_priority_first_then_fifo() {
        let mut q = PriorityQueue::new(10);
        q.push(1, "low-a").unwrap();
        q.push(9, "high-a").unwrap();
        q.push(1, "low-b").unwrap();
        q.push(9, "high-b").unwrap();
        q.push(5, "mid").unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["high-a", "high-b", "mid", "low-a", "low-b"]);
    }

    #[test]
    fn bounded() {
        let mut q = PriorityQueue::new(2);
        q.push(0, 1).unwrap();
        q.push(0, 2).unwrap();
        assert_eq!(q.push(10, 3), Err(QueueFull(3)));
        assert_eq!(q.len(), 2);
    }
}
