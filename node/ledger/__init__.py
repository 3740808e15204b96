"""The ledger: transactions, blocks, a persistent chain, blobs, verification and sync."""
