//! [`Few`]: a list whose first two items are held inline.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A list whose first two items are held inline, more on the heap: the lists of a workload
/// that are usually short (a container's `drop: [ALL]`, a pod's few labels) allocate
/// nothing and free nothing. Not `smallvec`: its array type parameter makes a type that
/// holds one invariant over its lifetimes, and a [`Workload<'static>`](super::Workload)
/// (serde's, owned) must pass where a `Workload<'a>` (the webhook's, borrowed) does.
#[derive(Debug, Clone, Default)]
pub enum Few<T> {
    #[default]
    Zero,
    One([T; 1]),
    Two([T; 2]),
    More(Vec<T>),
}

impl<T> Few<T> {
    /// Appends `item`. Each arm writes over a variant it has emptied or knows, so no old
    /// value is dropped: taking the whole list out and writing a new one back cost ~90
    /// instructions a push, a quarter of them in a `drop_in_place` of the emptied list.
    #[inline]
    pub fn push(&mut self, item: T) {
        match self {
            Few::More(items) => items.push(item),
            Few::Zero => *self = Few::One([item]),
            Few::One(_) => {
                if let Few::One([a]) = std::mem::replace(self, Few::Zero) {
                    *self = Few::Two([a, item]);
                }
            }
            Few::Two(_) => {
                if let Few::Two([a, b]) = std::mem::replace(self, Few::Zero) {
                    *self = Few::More(vec![a, b, item]);
                }
            }
        }
    }

    pub fn clear(&mut self) {
        *self = Few::Zero;
    }
}

impl<T> Deref for Few<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Few::Zero => &[],
            Few::One(items) => items,
            Few::Two(items) => items,
            Few::More(items) => items,
        }
    }
}

impl<'a, T> IntoIterator for &'a Few<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: PartialEq> PartialEq for Few<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T> Extend<T> for Few<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for item in items {
            self.push(item);
        }
    }
}

impl<T> FromIterator<T> for Few<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut few = Few::Zero;
        few.extend(items);
        few
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Few<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
            type Value = Few<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut few = Few::Zero;
                while let Some(item) = seq.next_element()? {
                    few.push(item);
                }
                Ok(few)
            }
        }

        deserializer.deserialize_seq(Items(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_its_items_in_order_inline_or_not() {
        for n in 0..6 {
            let few: Few<usize> = (0..n).collect();
            assert_eq!(*few, (0..n).collect::<Vec<_>>()[..]);
            assert_eq!(matches!(few, Few::More(_)), n > 2, "{n}");
            let mut cleared = few.clone();
            cleared.clear();
            assert!(cleared.is_empty());
            let read: Few<usize> =
                serde_json::from_str(&serde_json::to_string(&*few).unwrap()).unwrap();
            assert_eq!(read, few);
        }
        let wrong = serde_json::from_str::<Few<String>>(r#""ALL""#).unwrap_err();
        assert!(wrong.to_string().contains("a sequence"), "{wrong}");
    }
}
