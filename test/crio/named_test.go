package crio

import "go.podman.io/image/v5/docker/reference"

func parseNamed(s string) (reference.Named, error) { return reference.ParseNormalizedNamed(s) }
