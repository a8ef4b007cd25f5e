"""Web pages by URL: which addresses may be fetched (`addresses`), fetching them
(`fetch`), what a page or sitemap holds (`extract`), the documents they become (`service`)
and the fetch step of the ingestion job (`tasks`)."""
