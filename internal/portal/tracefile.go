package portal

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/conftrace/conftrace/gps"
)

// A patient's trace file is parsed by package gps's own parsers, the ones
// `conftrace authority gps` uses, which stop at the first error. When they
// refuse a file, the portal lists every line that is wrong, so that staff
// fix the file in one go: it cuts the file into its points (the lines of
// a CSV file, the <trkpt> elements of a GPX document), has the same
// parser read each point alone, and checks each valid point against the
// valid point before it with the same validation (gps.Trace.Validate). The
// parser's verdict on the whole file stays the one that counts: the list
// only explains it.

// maxLineErrors bounds the problems listed for one file.
const maxLineErrors = 100

// LineError is a problem with one point of a trace file.
type LineError struct {
	// Line is the line of the file, from 1; 0 for the file as a whole.
	Line int
	Msg  string
}

// TraceError is a refused trace file with its problems.
type TraceError struct {
	Problems []LineError
	// More is how many problems are not in Problems.
	More int
}

func (e *TraceError) Error() string {
	if len(e.Problems) == 0 {
		return "the trace file is refused"
	}
	p := e.Problems[0]
	if p.Line == 0 {
		return p.Msg
	}
	return fmt.Sprintf("line %d: %s (and %d more)", p.Line, p.Msg, len(e.Problems)+e.More-1)
}

// errEmptyTrace is returned for a file without fixes.
var errEmptyTrace = errors.New("the trace holds no fixes")

// traceKind returns "csv" or "gpx": format if given ("" or "auto" for
// the file name's extension).
func traceKind(format, filename string) (string, error) {
	switch f := strings.ToLower(format); f {
	case "csv", "gpx":
		return f, nil
	case "", "auto":
	default:
		return "", fmt.Errorf("format %q: want csv or gpx", format)
	}
	switch ext := strings.ToLower(filepath.Ext(filename)); ext {
	case ".csv", ".gpx":
		return ext[1:], nil
	}
	return "", fmt.Errorf("cannot tell the format of %q from its extension: choose CSV or GPX", filename)
}

// parseTrace parses data as kind. A file the parser refuses returns a
// *TraceError listing its problems line by line.
func parseTrace(kind string, data []byte, l gps.Limits) (gps.Trace, error) {
	parse := gps.ParseCSV
	if kind == "gpx" {
		parse = gps.ParseGPX
	}
	tr, err := parse(bytes.NewReader(data), l)
	if err == nil && len(tr) == 0 {
		return nil, &TraceError{Problems: []LineError{{Msg: errEmptyTrace.Error()}}}
	}
	if err == nil {
		return tr, nil
	}
	var units []unit
	if !errors.Is(err, gps.ErrTooLarge) && !errors.Is(err, gps.ErrTooManyPoints) {
		if kind == "gpx" {
			units = gpxUnits(data)
		} else {
			units = csvUnits(data)
		}
	}
	te := diagnose(units, parse, l)
	if len(te.Problems) == 0 {
		// The parts were each fine: the whole is what is wrong.
		line := 0
		var pe *gps.PointError
		if errors.As(err, &pe) {
			line = pe.Line
		}
		te.Problems = []LineError{{Line: line, Msg: message(err)}}
	}
	return nil, te
}

// unit is one point's text: a document the parser reads alone, or an
// error found while cutting the file.
type unit struct {
	line int
	doc  []byte
	err  error
}

// diagnose parses each unit alone and checks each valid point against
// the previous valid one.
func diagnose(units []unit, parse func(io.Reader, gps.Limits) (gps.Trace, error), l gps.Limits) *TraceError {
	te := &TraceError{}
	add := func(line int, err error) {
		if len(te.Problems) == maxLineErrors {
			te.More++
			return
		}
		te.Problems = append(te.Problems, LineError{Line: line, Msg: message(err)})
	}
	var prev *gps.Point
	for _, u := range units {
		if u.err != nil {
			add(u.line, u.err)
			continue
		}
		tr, err := parse(bytes.NewReader(u.doc), l)
		switch {
		case err != nil:
			add(u.line, err)
		case len(tr) == 1 && prev != nil:
			if err := (gps.Trace{*prev, tr[0]}).Validate(l); err != nil {
				add(u.line, err)
				continue
			}
			fallthrough
		case len(tr) == 1:
			prev = &tr[0]
		}
	}
	return te
}

// csvUnits cuts a CSV file into its lines.
func csvUnits(data []byte) []unit {
	var units []unit
	for i, line := range bytes.Split(data, []byte("\n")) {
		units = append(units, unit{line: i + 1, doc: line})
	}
	return units
}

// gpxUnits cuts a GPX document into its track points, each wrapped in a
// document of its own.
func gpxUnits(data []byte) []unit {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	d.Entity = nil
	var units []unit
	start, line, depth := int64(-1), 0, 0
	for {
		before := d.InputOffset()
		tok, err := d.Token()
		if err == io.EOF {
			return units
		}
		if err != nil {
			l, _ := d.InputPos()
			return append(units, unit{line: l, err: fmt.Errorf("%w: %v", gps.ErrSyntax, err)})
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if tok.Name.Local == "trkpt" && start < 0 {
				start, depth = before, 0
				line, _ = d.InputPos()
			}
			if start >= 0 {
				depth++
			}
		case xml.EndElement:
			if start < 0 {
				continue
			}
			if depth--; depth == 0 {
				doc := append([]byte("<gpx><trk><trkseg>"), data[start:d.InputOffset()]...)
				units = append(units, unit{line: line, doc: append(doc, "</trkseg></trk></gpx>"...)})
				start = -1
			}
		}
	}
}

// lineRef is what the parsers write of a line or point, which the page
// says in a column of its own.
var lineRef = regexp.MustCompile(`(point \d+ \(line \d+\): |line \d+: |GPX line \d+: )`)

// message is err as the page shows it: without the package's prefix and
// the line numbers of the parts parsed alone.
func message(err error) string {
	var pe *gps.PointError
	s := err.Error()
	if errors.As(err, &pe) {
		s = pe.Err.Error()
	}
	s = lineRef.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, "gps: ", "")
}
