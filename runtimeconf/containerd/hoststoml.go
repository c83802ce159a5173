package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// hostsFile is the part of a hosts.toml that containerd reads (core/remotes/docker/config):
// the server and its TLS settings at the top level, then one [host."<url>"] table per mirror,
// tried in the order the tables appear in the file.
type hostsFile struct {
	Server       string                  `toml:"server"`
	Capabilities []string                `toml:"capabilities"`
	CA           any                     `toml:"ca"`
	Client       any                     `toml:"client"`
	SkipVerify   *bool                   `toml:"skip_verify"`
	Hosts        map[string]hostSettings `toml:"host"`
}

type hostSettings struct {
	Capabilities []string `toml:"capabilities"`
	CA           any      `toml:"ca"`
	Client       any      `toml:"client"`
	SkipVerify   *bool    `toml:"skip_verify"`
	OverridePath bool     `toml:"override_path"`
}

// parsedHosts is a hosts.toml as containerd would see it, and its layout: where the top-level
// keys end and each table begins, so that Shoal can insert its host without rewriting the
// operator's text.
type parsedHosts struct {
	file     hostsFile
	order    []string  // [host."..."] keys in file order: the order containerd tries them
	preamble []byte    // everything before the first table: top-level keys and comments
	sections []section // each table with the comments just above it, in file order
}

type section struct {
	key  []string // the table's dotted key: host, http://..., [header]
	text []byte
}

// parseHosts parses a hosts.toml the way containerd does (go-toml/v2, hosts in table order)
// and splits it into the preamble and its tables.
func parseHosts(b []byte) (*parsedHosts, error) {
	ph := &parsedHosts{}
	if err := toml.Unmarshal(b, &ph.file); err != nil {
		return nil, describeTOMLError(b, err)
	}
	var p unstable.Parser
	p.Reset(b)
	type header struct {
		start int
		key   []string
	}
	var headers []header
	lastEnd := 0 // end of the last key/value or table header: comments above a header start after it
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.KeyValue:
			lastEnd = max(lastEnd, int(e.Raw.Offset+e.Raw.Length))
		case unstable.Table, unstable.ArrayTable:
			var key []string
			first, end := -1, 0
			for it := e.Key(); it.Next(); {
				n := it.Node()
				key = append(key, string(n.Data))
				if first < 0 {
					first = int(n.Raw.Offset)
				}
				end = int(n.Raw.Offset + n.Raw.Length)
			}
			start := lineStart(b, first)
			start = commentsAbove(b, start, lastEnd)
			headers = append(headers, header{start: start, key: key})
			lastEnd = end
			if e.Kind == unstable.Table && len(key) >= 2 && key[0] == "host" && !contains(ph.order, key[1]) {
				ph.order = append(ph.order, key[1])
			}
		}
	}
	if err := p.Error(); err != nil {
		return nil, describeTOMLError(b, err)
	}
	if len(headers) == 0 {
		ph.preamble = b
		return ph, nil
	}
	ph.preamble = b[:headers[0].start]
	for i, h := range headers {
		end := len(b)
		if i+1 < len(headers) {
			end = headers[i+1].start
		}
		ph.sections = append(ph.sections, section{key: h.key, text: b[h.start:end]})
	}
	return ph, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// lineStart is the offset of the start of the line holding offset i.
func lineStart(b []byte, i int) int {
	return bytes.LastIndexByte(b[:i], '\n') + 1
}

// commentsAbove moves start up over the comment lines directly above it (no blank line
// between), stopping at floor, so that a comment describing a table moves with it.
func commentsAbove(b []byte, start, floor int) int {
	for start > floor {
		prev := lineStart(b, start-1)
		if prev < floor {
			break
		}
		line := bytes.TrimSpace(b[prev:start])
		if len(line) == 0 || line[0] != '#' {
			break
		}
		start = prev
	}
	return start
}

// describeTOMLError adds the line and column to go-toml's decode errors.
func describeTOMLError(b []byte, err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("line %d, column %d: %s", row, col, de.Error())
	}
	var pe *unstable.ParserError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s", pe.Message)
	}
	return err
}

// sameHost reports whether a [host."..."] key names the agent: containerd reads a key without
// a scheme as https://.
func sameHost(key string, agent *url.URL) bool {
	if !strings.Contains(key, "://") {
		key = "https://" + key
	}
	u, err := url.Parse(key)
	if err != nil {
		return false
	}
	return u.Scheme == agent.Scheme && strings.EqualFold(u.Host, agent.Host) && strings.Trim(u.Path, "/") == ""
}
