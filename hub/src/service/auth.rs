//! Who may do what, independent of HTTP: operators' passwords (Argon2id), device and
//! session tokens (random, kept only as SHA-256), constant-time comparison of secrets. The
//! HTTP layer (`crate::http`) reads the credentials from requests and asks here.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

use crate::store::Role;

/// An Argon2id PHC string for `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks `password` against a stored hash (a malformed hash never matches).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Rules for a new operator's name and password.
pub fn check_new_operator(name: &str, password: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)) {
        return Err(format!("operator name {name:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'"));
    }
    if password.chars().count() < 10 {
        return Err("the password must have at least 10 characters".into());
    }
    Ok(())
}

/// Failed sign-ins count for this long (they are read back from the audit log).
pub const SIGNIN_WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failed sign-ins within the window that lock an account, and an address.
pub const MAX_FAILED_PER_ACCOUNT: i64 = 5;
pub const MAX_FAILED_PER_ADDRESS: i64 = 20;

/// Why a sign-in is refused before its password is checked, given the failed sign-ins
/// within the window as that account and from that address; None: it may try. A lock
/// lapses as its failures grow older than the window (the right password does not open
/// it early, or guessing could go on at the lock's pace).
pub fn lockout(as_account: i64, from_address: i64) -> Option<String> {
    if as_account >= MAX_FAILED_PER_ACCOUNT {
        Some(format!("This account is locked: {as_account} failed sign-ins in the last 15 minutes. Try again later."))
    } else if from_address >= MAX_FAILED_PER_ADDRESS {
        Some(format!(
            "Sign-ins from your address are locked: {from_address} failed in the last 15 minutes. Try again later."
        ))
    } else {
        None
    }
}

/// Whether `role` may do what needs `need` (viewer < operator < admin).
pub fn allows(role: Role, need: Role) -> bool {
    let rank = |r| match r {
        Role::Viewer => 0,
        Role::Operator => 1,
        Role::Admin => 2,
    };
    rank(role) >= rank(need)
}

/// A valid Argon2id hash of a random password nobody knows.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1dI4H0nq6nKpBKl1B8GqiY6QHIkAJt9pFTt8yM6cN1k";

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the store keeps of a token: its SHA-256.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new 40-hex device token.
pub fn new_token() -> String {
    let mut b = [0u8; 20];
    getrandom::fill(&mut b).expect("the OS random source failed");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_stored_as_salted_argon2id_and_checked() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$") && a != b, "salted: {a} {b}");
        assert!(!a.contains("correct"));
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterz", &a));
        assert!(!verify_password("x", "not a hash"));
        assert!(!verify_password("", DUMMY_HASH));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn too_many_failed_sign_ins_lock_the_account_or_the_address() {
        assert_eq!(lockout(4, 19), None);
        assert!(lockout(5, 0).unwrap().contains("account is locked: 5 failed"));
        assert!(lockout(0, 20).unwrap().contains("your address are locked: 20 failed"));
    }

    #[test]
    fn operator_names_and_passwords_have_rules() {
        assert!(check_new_operator("ops.team-1@site", "0123456789").is_ok());
        assert!(check_new_operator("", "0123456789").is_err());
        assert!(check_new_operator("a b", "0123456789").is_err());
        assert!(check_new_operator("ops", "short").unwrap_err().contains("10 characters"));
    }
}
