//! Identifier newtypes, so a job id is never confused with a worker id or a fold index.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ProtoError;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A job, as printed by `foldtrain submit`.
    JobId
);
string_id!(
    /// A worker process, stable across its re-registrations.
    WorkerId
);

/// Zero-based fold index within a job.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct FoldIndex(pub u32);

impl fmt::Display for FoldIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A dispatch of one fold; every dispatch gets a new, larger one, so results from a
/// stale dispatch can be told apart and rejected.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct AttemptId(pub u64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The BLAKE3 hash of a blob's bytes: the blob's address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| {
            ProtoError::invalid("hash", format!("expected 32 bytes, got {}", bytes.len()))
        })?;
        Ok(Self(array))
    }
}

impl From<blake3::Hash> for BlobHash {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", &self.to_hex()[..16])
    }
}

impl FromStr for BlobHash {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        blake3::Hash::from_hex(s).map(Self::from).map_err(|e| {
            ProtoError::invalid("hash", format!("{s:?} is not a BLAKE3 hex hash: {e}"))
        })
    }
}

impl Serialize for BlobHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_hash_round_trips_through_hex() {
        let hash = BlobHash::of(b"capsule");
        let parsed: BlobHash = hash.to_hex().parse().unwrap();
        assert_eq!(parsed, hash);
        assert_eq!(hash.to_hex(), blake3::hash(b"capsule").to_hex().to_string());
    }

    #[test]
    fn blob_hash_rejects_wrong_length() {
        let err = BlobHash::from_slice(&[0u8; 31]).unwrap_err();
        assert!(
            err.to_string().contains("expected 32 bytes, got 31"),
            "{err}"
        );
        assert!("zz".parse::<BlobHash>().is_err());
    }
}
