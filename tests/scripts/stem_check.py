#!/usr/bin/env python3
"""Parses an authority's documents with stem (an independent parser), validating them.

Usage: stem_check.py DIR, where DIR holds `consensus`, `consensus-microdesc`, `vote`,
`microdescs` and `keys` as fetched from the authority's DirPort. Exits non-zero, naming
the document, on the first error; prints a summary line per document otherwise.
"""
import hashlib
import os
import sys

import stem
import stem.descriptor
from stem.descriptor import DocumentHandler, parse_file


def main(d):
    path = lambda n: os.path.join(d, n)
    certs = list(parse_file(path("keys"), "dir-key-certificate-3 1.0", validate=True))
    assert certs, "no key certificates"
    print("keys: %d certificates" % len(certs))

    ns = next(parse_file(path("consensus"), "network-status-consensus-3 1.0", validate=True,
                         document_handler=DocumentHandler.DOCUMENT))
    assert ns.routers, "ns consensus lists no relays"
    ns.validate_signatures(certs)
    print("consensus: %d relays, %d signatures, method %d, valid-after %s" % (
        len(ns.routers), len(ns.signatures), ns.consensus_method, ns.valid_after))

    md = next(parse_file(path("consensus-microdesc"), "network-status-microdesc-consensus-3 1.0",
                         validate=True, document_handler=DocumentHandler.DOCUMENT))
    assert md.routers, "md consensus lists no relays"
    # stem checks signatures with SHA-1 only; the md flavor is signed over SHA-256.
    signed = md._content_range("network-status-version", "directory-signature ")
    want = hashlib.sha256(signed).hexdigest().upper()
    keys = {c.fingerprint: c.signing_key for c in certs}
    good = [s for s in md.signatures
            if s.identity in keys and md._digest_for_signature(keys[s.identity], s.signature) == want]
    assert len(good) > len(md.signatures) / 2, "md consensus: %d of %d signatures verify" % (
        len(good), len(md.signatures))
    print("consensus-microdesc: %d relays, %d of %d signatures verify" % (
        len(md.routers), len(good), len(md.signatures)))

    vote = next(parse_file(path("vote"), "network-status-vote-3 1.0", validate=True,
                           document_handler=DocumentHandler.DOCUMENT))
    assert vote.is_vote and vote.routers, "vote lists no relays"
    vote.validate_signatures([vote.directory_authorities[0].key_certificate])
    print("vote: %d relays, authority %s" % (len(vote.routers), vote.directory_authorities[0].nickname))

    mds = list(parse_file(path("microdescs"), "microdescriptor 1.0", validate=True))
    digests = {m.digest() for m in mds}
    listed = {r.microdescriptor_digest for r in md.routers.values()}
    missing = listed - digests
    assert not missing, "microdescriptors missing or with wrong digests: %s" % sorted(missing)
    print("microdescs: %d, all consensus digests match" % len(mds))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # report any parse or validation error as a failure
        print("stem check failed: %s: %s" % (type(e).__name__, e))
        sys.exit(1)
