module github.com/conftrace/conftrace

go 1.26
