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
	first, last, ok := parseSpan(spec)
	if !ok {
		return bad("malformed range")
	}
	if size < 0 {
		return bad("the blob's size is not known yet")
	}
	switch {
	case first < 0:
		// Suffix range: the last n bytes.
		n := last
		if n <= 0 {
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
		a := first
		end := size - 1
		if last >= 0 {
			if last < a {
				return bad("malformed range")
			}
			end = min(end, last)
		}
		if a >= size {
			return bad("range not satisfiable")
		}
		return byteRange{off: a, n: end - a + 1}, true, nil
	}
}

// parseContentRange reads an upload chunk's Content-Range, "<start>-<end>" inclusive as the
// distribution spec writes it; the "bytes " and "bytes=" prefixes some clients add are accepted,
// and a "/<size>" suffix is ignored.
func parseContentRange(h string) (start, end int64, ok bool) {
	h = strings.TrimSpace(h)
	if rest, found := strings.CutPrefix(h, "bytes"); found {
		h = strings.TrimLeft(rest, " =")
	}
	h, _, _ = strings.Cut(h, "/")
	start, end, ok = parseSpan(h)
	if !ok || start < 0 || end < start {
		return 0, 0, false
	}
	return start, end, true
}

// parseSpan reads "a-b", "a-" or "-b", the one grammar of both range headers: first and last
// are -1 where absent. Numbers are plain decimal digits (no sign, no spaces inside) that fit an
// int64; at least one must be present.
func parseSpan(spec string) (first, last int64, ok bool) {
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found || (a == "" && b == "") {
		return 0, 0, false
	}
	parse := func(s string) (int64, bool) {
		if s == "" {
			return -1, true
		}
		if len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		v, err := strconv.ParseInt(s, 10, 64)
		return v, err == nil
	}
	first, ok1 := parse(a)
	last, ok2 := parse(b)
	return first, last, ok1 && ok2
}
