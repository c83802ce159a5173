// Package p2p is the libp2p node of a Shoal agent: a host that speaks TLS over TCP (optionally inside a
// private network keyed by a swarm key), and a private Kademlia DHT (protocol prefix /shoal, server mode on
// every node) that maps content digests to the peers that hold them.
//
// The package knows nothing about HTTP or the content store. Other packages register their stream
// protocols on [Node.Host] and ask [Node.FindProviders] who holds a digest; the agent calls [Node.Provide]
// when it holds content and [Node.StopProviding] when it drops it.
//
// Lifecycle: [New] builds the host and the DHT and starts listening; [Node.Run] joins the cluster (bootstrap
// with retries), keeps it joined, and runs the reprovider until its context ends; [Node.Close] releases
// everything. docs/p2p.md explains the choices for operators.
package p2p
