package gps

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseCSV reads a trace from CSV lines "time,lat,lon" or
// "time,lat,lon,accuracy". The time is RFC 3339 (2024-03-01T12:00:00Z) or
// Unix seconds; fractions of a second are dropped. Latitude and longitude
// are decimal degrees, rounded to 1e-7; accuracy is in metres, empty for
// unknown, rounded to 0.1 m. A first line whose first field is "time" or "timestamp" is a
// header; lines starting with # are comments. The trace is validated
// against l (see [Trace.Validate]); errors name the line.
func ParseCSV(r io.Reader, l Limits) (Trace, error) {
	l = l.withDefaults()
	lr := &limitedReader{r: r, n: l.MaxBytes}
	cr := csv.NewReader(lr)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	cr.ReuseRecord = true
	var (
		t     Trace
		lines []int
	)
	for first := true; ; first = false {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if lr.over {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, l.MaxBytes)
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("%w: line %d: %v", ErrSyntax, pe.Line, pe.Err)
			}
			return nil, fmt.Errorf("gps: reading CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if first && len(rec) > 0 {
			if h := strings.ToLower(strings.TrimSpace(rec[0])); h == "time" || h == "timestamp" {
				continue
			}
		}
		if len(t) == l.MaxPoints {
			return nil, fmt.Errorf("%w: more than %d", ErrTooManyPoints, l.MaxPoints)
		}
		p, err := parseRecord(rec)
		if err != nil {
			return nil, &PointError{Index: len(t), Line: line, Err: err}
		}
		t = append(t, p)
		lines = append(lines, line)
	}
	if err := t.validate(l, lines); err != nil {
		return nil, err
	}
	return t, nil
}

func parseRecord(rec []string) (Point, error) {
	if len(rec) != 3 && len(rec) != 4 {
		return Point{}, fmt.Errorf("%w: %d fields, want time,lat,lon[,accuracy]", ErrSyntax, len(rec))
	}
	var p Point
	var err error
	if p.Time, err = parseTime(strings.TrimSpace(rec[0])); err != nil {
		return Point{}, err
	}
	if p.Lat, err = parseNumber(rec[1], "latitude"); err != nil {
		return Point{}, err
	}
	if p.Lon, err = parseNumber(rec[2], "longitude"); err != nil {
		return Point{}, err
	}
	if len(rec) == 4 && strings.TrimSpace(rec[3]) != "" {
		if p.Accuracy, err = parseNumber(rec[3], "accuracy"); err != nil {
			return Point{}, err
		}
	}
	return quantize(p), nil
}

// quantize rounds the coordinates of a valid point to 1e-7 degree and its
// accuracy to 0.1 m, and leaves invalid values for validation to name.
func quantize(p Point) Point {
	if p.Lat >= -90 && p.Lat <= 90 && p.Lon >= -180 && p.Lon <= 180 {
		p.Lat, p.Lon = round7(p.Lat), round7(p.Lon)
	}
	if p.Accuracy >= 0 && p.Accuracy <= maxEncodedAccuracy {
		p.Accuracy = math.Round(p.Accuracy*10) / 10
	}
	return p
}

func parseNumber(s, what string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%w: %s %q is not a finite decimal number", ErrSyntax, what, s)
	}
	return v, nil
}

// parseTime reads RFC 3339 or Unix seconds, dropping fractions.
func parseTime(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrTime)
	}
	if strings.ContainsAny(s, "T-:") && len(s) > 12 {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, fmt.Errorf("%w: %q is not RFC 3339", ErrTime, s)
		}
		return tm.Unix(), nil
	}
	whole, frac, _ := strings.Cut(s, ".")
	v, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || strings.Trim(frac, "0123456789") != "" {
		return 0, fmt.Errorf("%w: %q is neither RFC 3339 nor Unix seconds", ErrTime, s)
	}
	return v, nil
}

// limitedReader reads at most n bytes from r and records whether r had
// more, so that a long input is refused rather than cut short.
type limitedReader struct {
	r    io.Reader
	n    int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		// Probe for one more byte: only an input longer than the limit
		// is an error.
		var b [1]byte
		n, err := l.r.Read(b[:])
		if n > 0 {
			l.over = true
			return 0, ErrTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
