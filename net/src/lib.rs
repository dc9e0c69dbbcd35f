//! The wire: the gRPC contract, the provider and tracker APIs as traits, the libp2p node
//! (Kademlia DHT) and the in-memory network for tests.
//!
//! Not built yet: see issue 3.
