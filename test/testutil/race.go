//go:build race

package testutil

// RaceEnabled reports whether the tests were built with -race; BuildShoal then builds the agent
// with -race too.
const RaceEnabled = true
