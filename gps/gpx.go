package gps

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrDTD is returned by [ParseGPX] for documents with a document type
// declaration: GPX needs none, and DTDs are how XML entity attacks start.
var ErrDTD = errors.New("gps: GPX document has a DTD")

// maxTimeText bounds the text of one <time> element.
const maxTimeText = 64

// ParseGPX reads the track points of a GPX 1.0 or 1.1 document: every
// <trkpt lat="…" lon="…"> of every track and segment, in document order,
// with its <time> (RFC 3339, required; fractions of a second are
// dropped). Coordinates are rounded to 1e-7 degree; GPX has no accuracy in
// metres, so Accuracy is 0. Documents with a DTD are refused, and at most
// l.MaxBytes are read. The trace is validated against l (see
// [Trace.Validate]); errors name the point and its line.
func ParseGPX(r io.Reader, l Limits) (Trace, error) {
	l = l.withDefaults()
	lr := &limitedReader{r: r, n: l.MaxBytes}
	d := xml.NewDecoder(lr)
	d.Strict = true
	d.Entity = nil // only the five predefined entities
	var (
		t       Trace
		lines   []int
		cur     *Point // the track point being read
		inTime  bool
		hasTime bool
		text    strings.Builder
	)
	fail := func(err error) (Trace, error) {
		line, _ := d.InputPos()
		return nil, &PointError{Index: len(t), Line: line, Err: err}
	}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if lr.over {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, l.MaxBytes)
		}
		if err != nil {
			line, _ := d.InputPos()
			return nil, fmt.Errorf("%w: GPX line %d: %v", ErrSyntax, line, err)
		}
		switch tok := tok.(type) {
		case xml.Directive:
			return nil, ErrDTD
		case xml.StartElement:
			switch {
			case tok.Name.Local == "trkpt" && cur == nil:
				if len(t) == l.MaxPoints {
					return nil, fmt.Errorf("%w: more than %d", ErrTooManyPoints, l.MaxPoints)
				}
				p := Point{}
				hasTime = false
				var haveLat, haveLon bool
				for _, a := range tok.Attr {
					switch a.Name.Local {
					case "lat":
						if p.Lat, err = parseNumber(a.Value, "latitude"); err != nil {
							return fail(err)
						}
						haveLat = true
					case "lon":
						if p.Lon, err = parseNumber(a.Value, "longitude"); err != nil {
							return fail(err)
						}
						haveLon = true
					}
				}
				if !haveLat || !haveLon {
					return fail(fmt.Errorf("%w: trkpt without lat and lon", ErrSyntax))
				}
				cur = &p
				line, _ := d.InputPos()
				lines = append(lines, line)
			case tok.Name.Local == "time" && cur != nil:
				inTime = true
				text.Reset()
			}
		case xml.CharData:
			if inTime {
				if text.Len()+len(tok) > maxTimeText {
					return fail(fmt.Errorf("%w: <time> too long", ErrTime))
				}
				text.Write(tok)
			}
		case xml.EndElement:
			switch {
			case tok.Name.Local == "time" && inTime:
				inTime = false
				s := strings.TrimSpace(text.String())
				tm, err := time.Parse(time.RFC3339Nano, s)
				if err != nil {
					return fail(fmt.Errorf("%w: %q is not RFC 3339", ErrTime, s))
				}
				cur.Time = tm.Unix()
				hasTime = true
			case tok.Name.Local == "trkpt" && cur != nil:
				if !hasTime {
					return fail(fmt.Errorf("%w: trkpt without <time>", ErrTime))
				}
				t = append(t, quantize(*cur))
				cur = nil
			}
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("%w: GPX ends inside a trkpt", ErrSyntax)
	}
	if err := t.validate(l, lines); err != nil {
		return nil, err
	}
	return t, nil
}
