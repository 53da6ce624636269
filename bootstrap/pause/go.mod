module ferrite.local/pause

go 1.26
