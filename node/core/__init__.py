"""The chain's data types, below both the ledger and the contracts: canonical encoding,
signed transactions, blocks with commit certificates, and Merkle trees. Nothing here
imports `node.ledger` or `node.contracts` (an import-linter contract keeps it so)."""
