package portal

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// The pages are html/template files and one style sheet, embedded in the
// binary: the portal serves nothing from disk, and needs no JavaScript.
//
//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/style.css
var styleCSS []byte

// pages are the parsed templates, by page name: each page's file with
// layout.html, which defines the frame every page shares.
type pages map[string]*template.Template

var funcs = template.FuncMap{
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
	},
}

func parsePages() (pages, error) {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("portal: templates: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("portal: templates: %w", err)
	}
	ps := make(pages)
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("portal: template %s: %w", n, err)
		}
		ps[name] = t
	}
	return ps, nil
}

// view is what every page's template gets.
type view struct {
	Page      string // the template's name, also the <main> element's id
	Title     string
	Authority string
	User      string
	Role      Role
	CSRF      string
	Backend   Status
	// Notice is a message for the user (role=status); Error one about
	// what failed (role=alert).
	Notice, Error string
	// Data is the page's own.
	Data any
}

// render writes the page with status code. It renders to a buffer first,
// so that a template error becomes a whole 500 page rather than half a
// page.
func (p *Portal) render(w http.ResponseWriter, r *http.Request, code int, v view) {
	t := p.pages[v.Page]
	var b bytes.Buffer
	if t == nil {
		p.log.ErrorContext(r.Context(), "no such page", "page", v.Page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&b, "layout.html", v); err != nil {
		p.log.ErrorContext(r.Context(), "rendering page", "page", v.Page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// serveCSS serves the style sheet, which may be cached: it changes only
// with the binary.
func serveCSS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(styleCSS)
}
