//! Confab's end-to-end tests: each file in `tests/` starts a real `confab-bootstrap` and real nodes
//! in-process on loopback (127.0.0.1, mDNS off) and checks what a user would see.
//! Tests that drive the `confab` and `confab-bootstrap` binaries as processes live beside those
//! binaries (`node/tests/`, `bootstrap/tests/`), where cargo builds them for the test.
