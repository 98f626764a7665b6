package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/conftrace/conftrace/api"
)

// statsTimeout bounds the whole statistics request.
const statsTimeout = 30 * time.Second

// runStats prints a backend's public statistics: the noisy counts it
// released for each closed day.
func runStats(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "stats", "stats --server URL [--json]\n\n"+
		"Prints the backend's public statistics: for each closed UTC day, its counts\n"+
		"(results submitted, uploads, checks, phones exposed by order, GPS matches,\n"+
		"imported GAEN keys) with the differentially private noise of the backend's\n"+
		"attested policy, ε and the noise's standard deviation. Values carry noise by\n"+
		"design; a day marked * was counted only in part (an enclave started that day).\n"+
		"The answer is a plain GET, not authenticated by the attestation.")
	server := fs.String("server", "", "the backend's base `URL` (required)")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *server == "" {
		return usagef("--server is required")
	}
	st, err := fetchStatistics(ctx, *server)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(cio.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printStatistics(cio.stdout, st)
}

// fetchStatistics gets and checks the statistics of the backend at server.
func fetchStatistics(ctx context.Context, server string) (api.Statistics, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return api.Statistics{}, usagef("--server %q: want an http or https URL", server)
	}
	u = u.JoinPath(api.PathStatistics)
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return api.Statistics{}, fmt.Errorf("statistics request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return api.Statistics{}, fmt.Errorf("fetching statistics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, api.MaxStatisticsSize+1))
	if err != nil {
		return api.Statistics{}, fmt.Errorf("reading statistics from %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae api.Error
		if json.Unmarshal(body, &ae) == nil && ae.Code != "" {
			if ae.Code == api.CodeNotFound {
				return api.Statistics{}, fmt.Errorf("%s releases no statistics: %s", server, ae.Message)
			}
			return api.Statistics{}, fmt.Errorf("%s refused: %w", u, &ae)
		}
		return api.Statistics{}, fmt.Errorf("%s answered %s", u, resp.Status)
	}
	st, err := api.ParseStatistics(body)
	if err != nil {
		return api.Statistics{}, fmt.Errorf("%s: %w", u, err)
	}
	return st, nil
}

// printStatistics writes st as a table: a row a day, a column a count,
// then each count's noise.
func printStatistics(w io.Writer, st api.Statistics) error {
	if len(st.Days) == 0 {
		_, err := fmt.Fprintln(w, "no day released yet: a day is released once it has closed (UTC)")
		return err
	}
	var names []string
	for _, n := range api.StatisticsCountNames() {
		for _, d := range st.Days {
			if _, ok := d.Value(n); ok {
				names = append(names, n)
				break
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "date\tε\treleases\t%s\t\n", strings.Join(names, "\t"))
	for _, d := range st.Days {
		date := d.Date
		if d.Partial {
			date += "*"
		}
		row := []string{date, strconv.FormatFloat(d.Epsilon, 'f', -1, 64), strconv.Itoa(d.Releases)}
		for _, n := range names {
			if v, ok := d.Value(n); ok {
				row = append(row, strconv.FormatInt(v, 10))
			} else {
				row = append(row, "-")
			}
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	last := st.Days[len(st.Days)-1]
	fmt.Fprintf(w, "\nnoise on %s: %s, ε %s per count per day\n", last.Date, last.Mechanism, strconv.FormatFloat(last.Epsilon, 'f', -1, 64))
	for _, c := range last.Counts {
		fmt.Fprintf(w, "  %-22s sensitivity %d, standard deviation %.1f\n", c.Name, c.Sensitivity, c.NoiseStdDev)
	}
	_, err := fmt.Fprintln(w, "Values are counts plus noise, clamped at 0; * marks a day counted only in part.")
	return err
}
