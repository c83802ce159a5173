package registryapi

import (
	"net/http"
	"strconv"
	"testing"
)

func TestParseRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		header  string
		size    int64
		want    byteRange
		partial bool
		invalid bool
	}{
		{name: "no header", header: "", size: 20},
		{name: "no header, unknown size", header: "", size: -1},
		{name: "closed", header: "bytes=0-9", size: 20, want: byteRange{0, 10}, partial: true},
		{name: "one byte", header: "bytes=19-19", size: 20, want: byteRange{19, 1}, partial: true},
		{name: "open", header: "bytes=5-", size: 20, want: byteRange{5, 15}, partial: true},
		{name: "end past size is clamped", header: "bytes=10-100", size: 20, want: byteRange{10, 10}, partial: true},
		{name: "whole as a range", header: "bytes=0-", size: 20, want: byteRange{0, 20}, partial: true},
		{name: "suffix", header: "bytes=-3", size: 20, want: byteRange{17, 3}, partial: true},
		{name: "suffix longer than blob", header: "bytes=-30", size: 20, want: byteRange{0, 20}, partial: true},
		{name: "spaces around the spec", header: "bytes= 0-1 ", size: 20, want: byteRange{0, 2}, partial: true},
		{name: "leading zeros", header: "bytes=007-008", size: 20, want: byteRange{7, 2}, partial: true},
		{name: "max int64 end", header: "bytes=0-9223372036854775807", size: 20, want: byteRange{0, 20}, partial: true},
		{name: "start at size", header: "bytes=20-", size: 20, invalid: true},
		{name: "start past size", header: "bytes=100-200", size: 20, invalid: true},
		{name: "empty blob", header: "bytes=0-", size: 0, invalid: true},
		{name: "suffix of empty blob", header: "bytes=-1", size: 0, invalid: true},
		{name: "zero suffix", header: "bytes=-0", size: 20, invalid: true},
		{name: "multiple ranges", header: "bytes=0-1,3-4", size: 20, invalid: true},
		{name: "trailing comma", header: "bytes=0-1,", size: 20, invalid: true},
		{name: "letters", header: "bytes=a-b", size: 20, invalid: true},
		{name: "other unit", header: "items=0-1", size: 20, invalid: true},
		{name: "upper case unit", header: "BYTES=0-1", size: 20, invalid: true},
		{name: "reversed", header: "bytes=5-2", size: 20, invalid: true},
		{name: "no dash", header: "bytes=5", size: 20, invalid: true},
		{name: "only dash", header: "bytes=-", size: 20, invalid: true},
		{name: "empty spec", header: "bytes=", size: 20, invalid: true},
		{name: "double dash", header: "bytes=--1", size: 20, invalid: true},
		{name: "negative end", header: "bytes=1--2", size: 20, invalid: true},
		{name: "plus sign", header: "bytes=+1-2", size: 20, invalid: true},
		{name: "hex", header: "bytes=0x1-2", size: 20, invalid: true},
		{name: "overflowing start", header: "bytes=99999999999999999999-", size: 20, invalid: true},
		{name: "overflowing end", header: "bytes=0-99999999999999999999", size: 20, invalid: true},
		{name: "overflowing 19 digits", header: "bytes=9999999999999999999-", size: 20, invalid: true},
		{name: "unknown size", header: "bytes=0-1", size: -1, invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, partial, err := parseRange(tc.header, tc.size)
			if tc.invalid {
				if err == nil || err.Status != http.StatusRequestedRangeNotSatisfiable || err.Code != CodeRangeInvalid {
					t.Fatalf("parseRange(%q, %d) = %+v, %v, %v; want RANGE_INVALID", tc.header, tc.size, got, partial, err)
				}
				return
			}
			if err != nil || got != tc.want || partial != tc.partial {
				t.Fatalf("parseRange(%q, %d) = %+v, %v, %v; want %+v, %v", tc.header, tc.size, got, partial, err, tc.want, tc.partial)
			}
		})
	}
}

// TestBlobRanges checks Range requests end to end through the handler against a 20-byte blob.
func TestBlobRanges(t *testing.T) {
	t.Parallel()
	size := strconv.Itoa(len(testBlob))
	for _, tc := range []struct {
		name         string
		method       string
		header       string
		status       int
		contentRange string
		body         string
	}{
		{name: "no range", header: "", status: 200, body: string(testBlob)},
		{name: "first ten", header: "bytes=0-9", status: 206, contentRange: "bytes 0-9/20", body: "0123456789"},
		{name: "open ended", header: "bytes=5-", status: 206, contentRange: "bytes 5-19/20", body: "56789abcdefghij"},
		{name: "suffix", header: "bytes=-3", status: 206, contentRange: "bytes 17-19/20", body: "hij"},
		{name: "suffix longer than the blob", header: "bytes=-30", status: 206, contentRange: "bytes 0-19/20", body: string(testBlob)},
		{name: "end clamped", header: "bytes=10-100", status: 206, contentRange: "bytes 10-19/20", body: "abcdefghij"},
		{name: "last byte", header: "bytes=19-19", status: 206, contentRange: "bytes 19-19/20", body: "j"},
		{name: "start at size", header: "bytes=20-", status: 416, contentRange: "bytes */20"},
		{name: "start beyond size", header: "bytes=1000-", status: 416, contentRange: "bytes */20"},
		{name: "multiple ranges", header: "bytes=0-1,3-4", status: 416, contentRange: "bytes */20"},
		{name: "garbage", header: "bytes=a-b", status: 416, contentRange: "bytes */20"},
		{name: "other unit", header: "items=0-1", status: 416, contentRange: "bytes */20"},
		{name: "reversed", header: "bytes=5-2", status: 416, contentRange: "bytes */20"},
		{name: "range ignored on HEAD", method: http.MethodHead, header: "bytes=0-9", status: 200},
		{name: "bad range ignored on HEAD", method: http.MethodHead, header: "bytes=a-b", status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _, f := newTestServer(t)
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			var h http.Header
			if tc.header != "" {
				h = http.Header{"Range": {tc.header}}
			}
			rec := serve(s, method, "/v2/"+testRepo+"/blobs/"+f.blob.String(), h)
			if got := rec.Header().Get("Content-Range"); got != tc.contentRange {
				t.Errorf("Content-Range = %q, want %q", got, tc.contentRange)
			}
			if tc.status == http.StatusRequestedRangeNotSatisfiable {
				checkError(t, rec, method, tc.status, CodeRangeInvalid)
				return
			}
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d (body %q)", rec.Code, tc.status, rec.Body)
			}
			wantLen := strconv.Itoa(len(tc.body))
			if method == http.MethodHead {
				wantLen = size
			}
			if got := rec.Header().Get("Content-Length"); got != wantLen {
				t.Errorf("Content-Length = %q, want %q", got, wantLen)
			}
			if got := rec.Body.String(); got != tc.body {
				t.Errorf("body = %q, want %q", got, tc.body)
			}
			if got := rec.Header().Get("Accept-Ranges"); got != "bytes" {
				t.Errorf("Accept-Ranges = %q", got)
			}
		})
	}
}
