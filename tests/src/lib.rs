//! Workspace integration and interop tests: `tests/*.rs`, each a private Tor network on
//! 127.0.0.1 of unmodified C tor processes and ours, driven by the `tornet` library
//! (`deploy/tornet`) that the launcher uses too. This library target is empty.
