package transparency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
)

//go:embed templates/page.html
var templateFS embed.FS

//go:embed static/page.css
var pageCSS string

// page is the template; it is parsed once, from the binary.
var page = template.Must(template.New("page.html").ParseFS(templateFS, "templates/page.html"))

// contentSecurityPolicy allows the page's own style sheet, inline and
// pinned by its hash, and nothing else: no script, no image, no form,
// no frame.
var contentSecurityPolicy = func() string {
	sum := sha256.Sum256([]byte(pageCSS))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

// Page is the transparency page of one attestation bundle. It is safe for
// concurrent use.
type Page struct {
	view  *view
	stats *statistics
	log   *slog.Logger
	// last is the page as last served, with the server URL it names and
	// the version of the statistics it shows: nearly every request names
	// the same Host, and the page changes only with the bundle and the
	// statistics.
	last atomic.Pointer[rendered]
}

type rendered struct {
	server string
	stats  uint64
	body   []byte
}

// view is what the page shows of a bundle: everything but the commands,
// which name the URL of each request.
type view struct {
	CSS       template.CSS
	TEE       attest.TEE
	TEEName   string
	Simulated bool
	// Identity is nil when the evidence could not be read, and
	// EvidenceProblem says why; TCB is nil then too, and when the policy
	// could not be read.
	Identity        *identityView
	TCB             *tcbView
	EvidenceProblem string
	// IssuedAt and NotAfter are for people, the ISO forms for machines.
	IssuedAt, IssuedAtISO string
	NotAfter, NotAfterISO string
	Keys                  []string
	KeysProblem           string
	// CertificateKey is the exposure certificates' Ed25519 key, in hex,
	// or "" when the bundle carries none.
	CertificateKey string
	// Policy is nil when the policy could not be read, and
	// PolicyProblem says why.
	Policy        *policyView
	PolicyProblem string
	PolicySHA256  string
	PolicyDoc     string
	// Release is nil without a release statement; ReleaseProblem says
	// why it could not be read, if it could not.
	Release        *releaseView
	ReleaseProblem string
	GoVersion      string
	Platform       string
	Build          string
}

// chartView is a chart and the table of its values.
type chartView struct {
	Title, Note string
	SVG         template.HTML
	Problem     string
	Rows        []chartRow
}

type chartRow struct{ Day, Value string }

// pageData is what the template gets for one request.
type pageData struct {
	*view
	// Server is the backend's URL as the request named it, or "" when
	// the Host could not be printed.
	Server     string
	Verify     string
	Governance string
	// Charts are the statistics' charts; StatisticsFailed says that they
	// could not be read.
	Charts           []chartView
	StatisticsFailed bool
	// StatisticsRead says that the page reads statistics at all.
	StatisticsRead bool
}

// New returns the page of bundle b, with charts of the public statistics
// that stats returns (read at most every few minutes; nil for none). It
// verifies the bundle's evidence as phones do, as of the bundle's issue,
// to show the identity it proves. Nothing that goes wrong stops the page:
// what could not be read is shown with the reason. log hears about pages
// that fail to render and statistics that fail to read; nil discards.
func New(b attest.Bundle, stats StatisticsFunc, log *slog.Logger) *Page {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &view{
		CSS: template.CSS(pageCSS), TEE: b.Evidence.TEE, TEEName: teeNames[b.Evidence.TEE], Simulated: b.Evidence.TEE == attest.Sim,
		IssuedAt: utc(b.IssuedAt), NotAfter: utc(b.NotAfter),
		IssuedAtISO: time.Unix(b.IssuedAt, 0).UTC().Format(time.RFC3339), NotAfterISO: time.Unix(b.NotAfter, 0).UTC().Format(time.RFC3339),
		GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, Build: buildCommand(),
	}
	switch {
	case b.Evidence.TEE == "":
		v.TEEName = "none named: the bundle carries no evidence"
	case v.TEEName == "":
		v.TEEName = string(b.Evidence.TEE)
	}
	doc := b.Policy
	sum := sha256.Sum256(doc)
	v.PolicySHA256 = hex.EncodeToString(sum[:])
	var pretty bytes.Buffer
	if json.Indent(&pretty, doc, "", "  ") == nil {
		v.PolicyDoc = pretty.String()
	} else {
		v.PolicyDoc = string(doc)
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		v.PolicyProblem = err.Error()
	} else {
		v.Policy = newPolicyView(pol)
	}
	// Verification is offline and quick: no context bounds it.
	id, err := readEvidence(context.Background(), b)
	var known *attest.Identity
	if err != nil {
		v.EvidenceProblem = err.Error()
	} else {
		known = &id
		v.Identity = newIdentityView(id)
		if v.Policy != nil {
			tcb := judgeTCB(id, pol.TCB)
			v.TCB = &tcb
		}
	}
	if kcs, err := ohttp.ParseKeyConfigs(b.KeyConfigs); err != nil {
		v.KeysProblem = err.Error()
	} else {
		for _, k := range kcs {
			v.Keys = append(v.Keys, "key "+strconv.Itoa(int(k.KeyID))+": "+k.KEM.String())
		}
	}
	v.CertificateKey = hex.EncodeToString(b.CertificateKey)
	if len(b.Release) > 0 {
		var p *policy.Policy
		if v.Policy != nil {
			p = &pol
		}
		if v.Release, err = newReleaseView(b.Release, known, doc, p); err != nil {
			v.ReleaseProblem = err.Error()
		}
	}
	return &Page{view: v, stats: &statistics{fetch: stats, log: log, now: time.Now}, log: log}
}

func newChartView(c Chart) chartView {
	cv := chartView{Title: c.Title, Note: c.Note}
	svg, err := BarChart(c.Title, c.Days, c.Values)
	if err != nil {
		cv.Problem = err.Error()
		return cv
	}
	cv.SVG = svg
	for i, d := range c.Days {
		cv.Rows = append(cv.Rows, chartRow{d, Value(c.Values[i])})
	}
	return cv
}

// ServeHTTP serves the page, naming the backend by the request's Host.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	server := serverURL(r)
	charts, failed, version := p.stats.get(r.Context())
	last := p.last.Load()
	if last == nil || last.server != server || last.stats != version {
		body, err := p.render(server, charts, failed)
		if err != nil {
			p.log.Error("transparency page", "err", err)
			http.Error(w, "the transparency page failed to render", http.StatusInternalServerError)
			return
		}
		last = &rendered{server: server, stats: version, body: body}
		p.last.Store(last)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// It changes with the bundle, and names the Host it was asked for.
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "Host")
	w.Write(last.body)
}

// render executes the template for one server URL; it renders to a buffer
// first, so that a template error becomes a whole 500 rather than half a
// page.
func (p *Page) render(server string, charts []chartView, failed bool) ([]byte, error) {
	d := pageData{view: p.view, Server: server, Governance: governanceCommand(server, p.view.TEE), Charts: charts, StatisticsFailed: failed,
		StatisticsRead: p.stats.fetch != nil}
	measurement := ""
	if p.view.Identity != nil {
		measurement = p.view.Identity.Measurement
	}
	d.Verify = verifyCommand(server, p.view.TEE, measurement)
	var b bytes.Buffer
	if err := page.Execute(&b, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// utc spells Unix seconds as a UTC time.
func utc(sec int64) string {
	return time.Unix(sec, 0).UTC().Format("2006-01-02 15:04 UTC")
}
