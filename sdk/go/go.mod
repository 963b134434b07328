module sluice.dev/filter

go 1.24
