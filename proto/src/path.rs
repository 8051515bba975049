//! Validated entry names and remote paths. Parse, don't validate: a [`Name`] or a
//! [`RemotePath`] that exists is valid, so nothing downstream checks again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name, in bytes (the Linux NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Why a name or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("'.' and '..' are not names")]
    Dot,
    #[error("a name cannot contain '/'")]
    Slash,
    #[error("a name cannot contain a NUL byte")]
    Nul,
    #[error("a name is at most {NAME_MAX} bytes")]
    TooLong,
    #[error("a path must start with '/'")]
    Relative,
}

/// One path component: 1..=255 bytes of UTF-8, no '/', no NUL, not '.' or '..'.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err(NameError::Empty),
            "." | ".." => Err(NameError::Dot),
            _ if s.contains('/') => Err(NameError::Slash),
            _ if s.contains('\0') => Err(NameError::Nul),
            _ if s.len() > NAME_MAX => Err(NameError::TooLong),
            _ => Ok(Self(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An absolute path inside one user's tree: `/` or `/a/b/c`. A single trailing slash
/// is accepted (`/a/`); empty components (`/a//b`) are not.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct RemotePath(Vec<Name>);

impl RemotePath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn components(&self) -> &[Name] {
        &self.0
    }

    /// The parent directory and the last name, or `None` for the root.
    pub fn split_last(&self) -> Option<(RemotePath, &Name)> {
        let (last, parent) = self.0.split_last()?;
        Some((RemotePath(parent.to_vec()), last))
    }

    pub fn join(&self, name: Name) -> RemotePath {
        let mut components = self.0.clone();
        components.push(name);
        RemotePath(components)
    }
}

impl FromStr for RemotePath {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix('/').ok_or(NameError::Relative)?;
        if rest.is_empty() {
            return Ok(Self::root());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        rest.split('/')
            .map(Name::from_str)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for name in &self.0 {
            write!(f, "/{name}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemotePath({self})")
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_str!(Name);
serde_via_str!(RemotePath);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!("a b.txt".parse::<Name>().unwrap().as_str(), "a b.txt");
        assert_eq!("".parse::<Name>(), Err(NameError::Empty));
        assert_eq!(".".parse::<Name>(), Err(NameError::Dot));
        assert_eq!("..".parse::<Name>(), Err(NameError::Dot));
        assert_eq!("a/b".parse::<Name>(), Err(NameError::Slash));
        assert_eq!("a\0b".parse::<Name>(), Err(NameError::Nul));
        assert_eq!("x".repeat(256).parse::<Name>(), Err(NameError::TooLong));
        assert!("x".repeat(255).parse::<Name>().is_ok());
        // 255 bytes, not 255 characters.
        assert_eq!("é".repeat(128).parse::<Name>(), Err(NameError::TooLong));
    }

    #[test]
    fn paths() {
        assert!("/".parse::<RemotePath>().unwrap().is_root());
        let p: RemotePath = "/a/b/".parse().unwrap();
        assert_eq!(p.to_string(), "/a/b");
        let (parent, last) = p.split_last().unwrap();
        assert_eq!(parent.to_string(), "/a");
        assert_eq!(last.as_str(), "b");
        assert_eq!("a/b".parse::<RemotePath>(), Err(NameError::Relative));
        assert_eq!("/a//b".parse::<RemotePath>(), Err(NameError::Empty));
        assert_eq!("/a/../b".parse::<RemotePath>(), Err(NameError::Dot));
        assert_eq!("//".parse::<RemotePath>(), Err(NameError::Empty));
    }
}
