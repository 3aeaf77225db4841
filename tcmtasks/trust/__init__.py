"""Trust on the node, as containers tools decide it: policy.json's requirements (GPG simple
signing and sigstore signatures), registries.d's lookaside stores, registries.conf's mirrors and
blocked registries; and signing what tcm pushes. docs/trust.md says, per feature, what
containers/image does and where tcm matches it."""

from .sign import SignOptions
from .verify import TrustOptions, open_trusted

__all__ = ["SignOptions", "TrustOptions", "open_trusted"]
