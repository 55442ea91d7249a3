"""The demo Reddit tenant's clientbatchingestapp and clientstreamingestapp.

Drops comments of deleted authors, normalises subreddit names and turns epoch seconds into
timestamps; everything vectorised with pyarrow.compute.
"""

import pyarrow as pa
import pyarrow.compute as pc


def clean(data, ctx):
    data = data.filter(pc.not_equal(data["author"], "[deleted]"))
    created = pc.cast(data["created_utc"], pa.int64())
    return pa.table({
        "created_utc": pc.cast(pc.multiply(created, 1_000_000), pa.timestamp("us")),
        "ups": data["ups"],
        "subreddit": pc.utf8_lower(data["subreddit"]),
        "id": data["id"],
        "author": data["author"],
        "score": data["score"],
        "body": data["body"],
    })
