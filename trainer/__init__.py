"""PyTorch side: data, model, local training, canonical serialization, verification, aggregation, incentives.

Pure functions over tensors and plain records. Never imports web3 or an IPFS client: what it produces leaves
through the composition root (fedledger/).
"""
