//! External keystore targets (placeholder until the PKCS#11 target lands).
