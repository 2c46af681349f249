//! Lists from peers decoded with their length limit checked as they are
//! read: a list longer than its limit fails at its first item too many,
//! so a message of a million one-byte items never becomes a million
//! allocations (the byte limit of each codec alone would allow it).

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{Error as _, SeqAccess, Visitor},
};

/// For `#[serde(deserialize_with = "bounded::<_, _, N>")]` on a `Vec`
/// field: at most `N` items.
pub(crate) fn bounded<'de, D, T, const N: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_seq(Bounded::<T, N>(PhantomData))
}

struct Bounded<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of at most {N} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        if let Some(announced) = seq.size_hint()
            && announced > N
        {
            return Err(A::Error::invalid_length(announced, &self));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            if items.len() == N {
                return Err(A::Error::invalid_length(N + 1, &self));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// A list of at most `N` items, as a whole message.
struct List<T, const N: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for List<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        bounded::<D, T, N>(deserializer).map(List)
    }
}

/// Decodes a CBOR list of at most `N` items.
pub(crate) fn decode_list<T: for<'de> Deserialize<'de>, const N: usize>(
    data: &[u8],
) -> Result<Vec<T>, String> {
    ciborium::from_reader::<List<T, N>, _>(data).map(|list| list.0).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, Debug)]
    struct Message {
        #[serde(deserialize_with = "bounded::<_, _, 3>")]
        items: Vec<u8>,
    }

    fn cbor(value: &impl Serialize) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn lists_over_their_limit_fail_without_being_read() {
        let ok: Message = ciborium::from_reader(&cbor(&Message { items: vec![1, 2, 3] })[..]).unwrap();
        assert_eq!(ok.items, [1, 2, 3]);
        let long = cbor(&Message { items: vec![1, 2, 3, 4] });
        let err = ciborium::from_reader::<Message, _>(&long[..]).unwrap_err().to_string();
        assert!(err.contains("at most 3"), "{err}");
        // A header announcing 2^31 items, with none following: refused at
        // the header, before any allocation.
        let mut huge = vec![0x9b];
        huge.extend_from_slice(&(1u64 << 31).to_be_bytes());
        assert!(decode_list::<u8, 3>(&huge).unwrap_err().contains("at most 3"));
        // An indefinite-length list is counted as it is read.
        let mut indefinite = vec![0x9f, 1, 2, 3, 4];
        indefinite.push(0xff);
        assert!(decode_list::<u8, 3>(&indefinite).is_err());
        assert_eq!(decode_list::<u8, 4>(&indefinite).unwrap(), [1, 2, 3, 4]);
    }
}
