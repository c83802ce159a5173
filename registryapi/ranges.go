package registryapi

import (
	"net/http"
	"strconv"
	"strings"
)

// byteRange is an inclusive-start, length-bounded slice of a blob.
type byteRange struct {
	off, n int64
}

// parseRange reads a Range header for a blob of the given size (size < 0: unknown).
// It accepts exactly one range, "bytes=a-b", "bytes=a-" or "bytes=-n". Multiple ranges and
// malformed headers are refused with RANGE_INVALID rather than silently ignored: registry clients
// send single ranges to resume, and an answer they didn't ask for would corrupt their resume.
// ok is false when the request has no Range header.
func parseRange(h string, size int64) (br byteRange, ok bool, e *Error) {
	if h == "" {
		return byteRange{}, false, nil
	}
	bad := func(msg string) (byteRange, bool, *Error) {
		return byteRange{}, true, &Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: CodeRangeInvalid, Message: msg}
	}
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found {
		return bad("only byte ranges are supported")
	}
	if strings.Contains(spec, ",") {
		return bad("multiple ranges are not supported")
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return bad("malformed range")
	}
	parse := func(s string) (int64, bool) {
		if s == "" || len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		v, err := strconv.ParseInt(s, 10, 64)
		return v, err == nil
	}
	if size < 0 {
		return bad("the blob's size is not known yet")
	}
	switch {
	case first == "":
		// Suffix range: the last n bytes.
		n, ok := parse(last)
		if !ok || n == 0 {
			return bad("malformed range")
		}
		if n > size {
			n = size
		}
		if size == 0 {
			return bad("range not satisfiable")
		}
		return byteRange{off: size - n, n: n}, true, nil
	default:
		a, ok := parse(first)
		if !ok {
			return bad("malformed range")
		}
		end := size - 1
		if last != "" {
			b, ok := parse(last)
			if !ok || b < a {
				return bad("malformed range")
			}
			if b < end {
				end = b
			}
		}
		if a >= size {
			return bad("range not satisfiable")
		}
		return byteRange{off: a, n: end - a + 1}, true, nil
	}
}
